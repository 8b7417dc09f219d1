//! Just enough of Python's pickle machine to read what `torch.save` writes: protocols 0 to 5,
//! with the objects a state dict is made of. Nothing is executed: a "global" is a name, and
//! calling one builds a tensor reference (`torch._utils._rebuild_tensor_v2`), a dict
//! (`collections.OrderedDict`) or an opaque value.
//!
//! Every length read from the stream is checked against what is left of it, and containers are
//! shared rather than copied when the memo hands them out again, so a hostile pickle can make
//! this allocate no more than a small multiple of its own size.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A value on the pickle stack. (Some payloads are only read by tests and debug output.)
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// A class or function, by module and name.
    Global(Rc<(String, String)>),
    /// What the file's persistent-id hook names: torch's storages.
    Persistent(Rc<Value>),
    /// A tensor `torch._utils._rebuild_tensor*` would build.
    Tensor(Rc<TensorCall>),
    /// Anything else a call or `NEWOBJ` made.
    Opaque,
}

/// The arguments of a `_rebuild_tensor_v2` call: a view of a storage.
#[derive(Clone, Debug)]
pub struct TensorCall {
    /// The storage's persistent id (a tuple starting with `"storage"`).
    pub storage: Value,
    /// In elements of the storage's type.
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }

    /// The items of a tuple or list.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.as_ref().clone()),
            Value::List(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }
}

/// Reads one pickle from `data[start..]`: its value and the position after its STOP.
pub fn read(data: &[u8], start: usize) -> Result<(Value, usize), String> {
    let mut machine = Machine {
        data,
        pos: start,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let value = machine.run()?;
    Ok((value, machine.pos))
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "pickle truncated: {n} bytes needed at byte {} of {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    /// A length prefix, as a count of bytes still to come (checked by `take`).
    fn len(&mut self, width: usize) -> Result<usize, String> {
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(self.take(width)?);
        usize::try_from(u64::from_le_bytes(bytes)).map_err(|_| "length overflows".to_owned())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("pickle truncated: a text argument has no end of line")?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn string(&mut self, len: usize) -> Result<Value, String> {
        let bytes = self.take(len)?;
        Ok(Value::Str(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            return Err("pickle pops past a MARK".into());
        }
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".into())
    }

    /// The items since the last MARK, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("pickle has no MARK to pop to")?;
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&self, key: u64) -> Result<Value, String> {
        self.memo
            .get(&key)
            .cloned()
            .ok_or_else(|| format!("pickle refers to memo entry {key}, never stored"))
    }

    fn memo_put(&mut self, key: u64) -> Result<(), String> {
        let value = self.stack.last().cloned().ok_or("pickle stack underflow")?;
        self.memo.insert(key, value);
        Ok(())
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO: the version
                }
                0x95 => {
                    self.take(8)?; // FRAME: a length hint
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'1' => {
                    self.pop_mark()?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.len(1)?
                    } else {
                        self.len(4)?
                    };
                    let value = long(self.take(n)?);
                    self.stack.push(value);
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let text = text.trim_end_matches('L');
                    let value = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => t.parse().map(Value::Int).unwrap_or_else(|_| Value::Opaque),
                    };
                    self.stack.push(value);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.le()?);
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let text = self.line()?;
                    self.stack
                        .push(text.parse().map(Value::Float).unwrap_or(Value::Opaque));
                }
                b'X' => {
                    let n = self.len(4)?;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8c => {
                    let n = self.len(1)?;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                0x8d => {
                    let n = self.len(8)?;
                    let s = self.string(n)?;
                    self.stack.push(s);
                }
                b'V' => {
                    let text = self.line()?;
                    self.stack.push(Value::Str(text));
                }
                b'S' => {
                    let text = self.line()?;
                    let quoted = text.trim_matches(|c| c == '\'' || c == '"');
                    self.stack.push(Value::Str(quoted.to_owned()));
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e => {
                    let width = match op {
                        b'T' | b'B' => 4,
                        b'U' | b'C' => 1,
                        _ => 8,
                    };
                    let n = self.len(width)?;
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(if matches!(op, b'T' | b'U') {
                        Value::Str(String::from_utf8_lossy(&bytes).into_owned())
                    } else {
                        Value::Bytes(bytes)
                    });
                }
                b')' => self.stack.push(Value::Tuple(Rc::new(vec![]))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n + self.marks.last().copied().unwrap_or(0) {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b']' | 0x8f => self.stack.push(Value::List(Rc::default())),
                b'l' | 0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'a' => {
                    let item = self.pop()?;
                    match self.top()? {
                        Value::List(list) => list.borrow_mut().push(item),
                        _ => return Err(format!("pickle APPEND to a non-list at byte {at}")),
                    }
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(list) => list.borrow_mut().extend(items),
                        _ => return Err(format!("pickle APPENDS to a non-list at byte {at}")),
                    }
                }
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items, at)?;
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(dict))));
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    set_items(self.top()?, vec![(key, value)], at)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items, at)?;
                    set_items(self.top()?, items, at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(module), Value::Str(name)) => {
                            self.stack.push(Value::Global(Rc::new((module, name))))
                        }
                        _ => {
                            return Err(format!("pickle STACK_GLOBAL of non-strings at byte {at}"));
                        }
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    self.stack.push(call(&callable, &args)?);
                }
                0x81 => {
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque);
                }
                0x92 => {
                    self.pop()?;
                    self.pop()?;
                    self.pop()?;
                    self.stack.push(Value::Opaque);
                }
                b'b' => {
                    // BUILD sets an object's state (a state dict's `_metadata`): not needed.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.stack.push(Value::Persistent(Rc::new(id)));
                }
                b'P' => {
                    let id = self.line()?;
                    self.stack.push(Value::Persistent(Rc::new(Value::Str(id))));
                }
                b'q' => {
                    let key = self.u8()?.into();
                    self.memo_put(key)?;
                }
                b'r' => {
                    let key = u32::from_le_bytes(self.le()?).into();
                    self.memo_put(key)?;
                }
                b'p' => {
                    let key = self
                        .line()?
                        .parse()
                        .map_err(|_| format!("pickle PUT with a bad key at byte {at}"))?;
                    self.memo_put(key)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(key)?;
                }
                b'h' => {
                    let key = self.u8()?.into();
                    let value = self.memo_get(key)?;
                    self.stack.push(value);
                }
                b'j' => {
                    let key = u32::from_le_bytes(self.le()?).into();
                    let value = self.memo_get(key)?;
                    self.stack.push(value);
                }
                b'g' => {
                    let key = self
                        .line()?
                        .parse()
                        .map_err(|_| format!("pickle GET with a bad key at byte {at}"))?;
                    let value = self.memo_get(key)?;
                    self.stack.push(value);
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode {other:#04x} at byte {at}: not a torch.save file?"
                    ));
                }
            }
        }
    }
}

/// A little-endian two's-complement integer of any width (LONG1, LONG4).
fn long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        // Wider than i64: torch's legacy magic number; kept as its bytes.
        return Value::Bytes(bytes.to_vec());
    }
    let mut buffer = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
        [0xff; 8]
    } else {
        [0; 8]
    };
    buffer[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buffer))
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err(format!("pickle dict items are not pairs at byte {at}"));
    }
    let mut items = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (items.next(), items.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn set_items(target: &mut Value, items: Vec<(Value, Value)>, at: usize) -> Result<(), String> {
    match target {
        Value::Dict(dict) => {
            dict.borrow_mut().extend(items);
            Ok(())
        }
        // Items set on an object we do not model are dropped with it.
        Value::Opaque => Ok(()),
        _ => Err(format!("pickle SETITEM(S) on a non-dict at byte {at}")),
    }
}

/// What calling `callable(*args)` stands for.
fn call(callable: &Value, args: &Value) -> Result<Value, String> {
    let Value::Global(global) = callable else {
        return Ok(Value::Opaque);
    };
    let args = args.items().unwrap_or_default();
    let (module, name) = (global.0.as_str(), global.1.as_str());
    Ok(match (module, name) {
        ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3") => {
            let bad = || format!("{module}.{name} with unexpected arguments");
            let dims = |v: &Value| -> Option<Vec<usize>> {
                v.items()?.iter().map(Value::as_usize).collect()
            };
            let (storage, offset, shape, stride) = match &args[..] {
                [storage, offset, shape, stride, ..] => (storage, offset, shape, stride),
                _ => return Err(bad()),
            };
            Value::Tensor(Rc::new(TensorCall {
                storage: storage.clone(),
                offset: offset.as_usize().ok_or_else(bad)?,
                shape: dims(shape).ok_or_else(bad)?,
                stride: dims(stride).ok_or_else(bad)?,
            }))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            args.first().cloned().unwrap_or(Value::Opaque)
        }
        ("collections", "OrderedDict") | ("builtins" | "__builtin__", "dict") => {
            Value::Dict(Rc::default())
        }
        _ => Value::Opaque,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_protocol_two_and_four_dicts() {
        // pickle.dumps({"a": 1, "b": [2.5, "x"]}, protocol=2) and protocol=4.
        let p2: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G@\x04\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04eu.";
        let p4: &[u8] = b"\x80\x04\x95 \x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94]\x94(G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94eu.";
        for data in [p2, p4] {
            let (value, end) = read(data, 0).unwrap();
            assert_eq!(end, data.len());
            let Value::Dict(dict) = value else {
                panic!("not a dict")
            };
            let dict = dict.borrow();
            assert_eq!(dict.len(), 2);
            assert_eq!(dict[0].0.as_str(), Some("a"));
            assert_eq!(dict[0].1.as_usize(), Some(1));
            let list = dict[1].1.items().unwrap();
            assert!(matches!(list[0], Value::Float(f) if f == 2.5));
            assert_eq!(list[1].as_str(), Some("x"));
        }
    }

    #[test]
    fn lengths_past_the_end_are_errors_not_allocations() {
        // BINUNICODE8 claiming 2^60 bytes.
        let mut data = vec![0x80, 0x04, 0x8d];
        data.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(read(&data, 0).unwrap_err().contains("truncated"));
        // Empty, unknown opcode, pop past a mark.
        assert!(read(&[], 0).is_err());
        assert!(read(b"\x80\x02\xff", 0).unwrap_err().contains("0xff"));
        assert!(read(b"\x80\x02K\x01(0.", 0).is_err());
    }

    #[test]
    fn memo_shares_containers() {
        // A list memoized, then fetched many times: shared, not copied.
        let mut data = b"\x80\x02]q\x00(K\x01K\x02e".to_vec();
        data.extend(b"(".iter());
        for _ in 0..1000 {
            data.extend(b"h\x00");
        }
        data.extend(b"l.");
        let (value, _) = read(&data, 0).unwrap();
        let outer = value.items().unwrap();
        assert_eq!(outer.len(), 1000);
        let Value::List(a) = &outer[1] else { panic!() };
        let Value::List(b) = &outer[2] else { panic!() };
        assert!(Rc::ptr_eq(a, b));
    }
}
