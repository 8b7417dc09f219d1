//! The nodes of a data-parallel run, joined over TCP, summing their gradients each step.
//!
//! Node 0 listens at the run's address; every other node connects to it and says its rank. Each
//! step, the others send their gradients to node 0, which adds them to its own in rank order
//! (the same additions, so the same bits, whatever arrives first) and sends the sum back: every
//! node then takes the same optimizer step. A star, not a ring: simple and exact, and enough for
//! the few nodes of a CPU run or of machines whose devices already share a node.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use phi_zoo_common::train::GradientSync;

/// How long a node waits for a peer's gradients before the run stops with an error.
const PEER_TIMEOUT: Duration = Duration::from_secs(600);

/// This node's place in a data-parallel run and its connections (see the module docs).
#[derive(Debug)]
pub struct NodeGroup {
    rank: usize,
    nodes: usize,
    /// Node 0: a connection to every other node, in rank order; any other node: one, to node 0.
    links: Mutex<Vec<TcpStream>>,
}

impl NodeGroup {
    /// Joins node `rank` of `nodes` to the run whose node 0 listens at `address`, waiting up to
    /// `patience` for the others to connect (node 0) or for node 0 to listen (the others).
    pub fn join(rank: usize, nodes: usize, address: &str, patience: Duration) -> io::Result<Self> {
        if nodes == 0 || rank >= nodes {
            return Err(invalid(format!("node rank {rank} of {nodes} nodes")));
        }
        let links = if rank == 0 {
            accept_peers(nodes, address, patience)?
        } else {
            vec![connect(rank, nodes, address, patience)?]
        };
        for link in &links {
            link.set_read_timeout(Some(PEER_TIMEOUT))?;
            link.set_nodelay(true)?;
        }
        Ok(Self {
            rank,
            nodes,
            links: Mutex::new(links),
        })
    }
}

impl GradientSync for NodeGroup {
    fn nodes(&self) -> usize {
        self.nodes
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn sum(&self, values: &mut [f32]) -> io::Result<()> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        if self.rank != 0 {
            let link = &mut links[0];
            send(link, values)?;
            return receive_into(link, values, 0, |slot, v| *slot = v);
        }
        for (i, link) in links.iter_mut().enumerate() {
            receive_into(link, values, i + 1, |slot, v| *slot += v)?;
        }
        for link in links.iter_mut() {
            send(link, values)?;
        }
        Ok(())
    }
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Node 0: the other nodes' connections, ordered by the rank each announces.
fn accept_peers(nodes: usize, address: &str, patience: Duration) -> io::Result<Vec<TcpStream>> {
    let listener = TcpListener::bind(address)
        .map_err(|e| io::Error::new(e.kind(), format!("node 0 listening at {address}: {e}")))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + patience;
    let mut peers: Vec<Option<TcpStream>> = (1..nodes).map(|_| None).collect();
    while peers.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(patience))?;
                let [rank, their_nodes] = read_header(&mut stream)?;
                if their_nodes != nodes || rank == 0 || rank >= nodes {
                    return Err(invalid(format!(
                        "a node announced rank {rank} of {their_nodes} nodes; this run has {nodes}"
                    )));
                }
                if peers[rank - 1].replace(stream).is_some() {
                    return Err(invalid(format!("two nodes announced rank {rank}")));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<usize> =
                        (1..nodes).filter(|r| peers[r - 1].is_none()).collect();
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "nodes {missing:?} did not connect to {address} within {patience:?}"
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(peers.into_iter().flatten().collect())
}

/// Any other node: its connection to node 0, retried until node 0 listens.
fn connect(rank: usize, nodes: usize, address: &str, patience: Duration) -> io::Result<TcpStream> {
    let deadline = Instant::now() + patience;
    let target = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("no address for {address}")))?;
    loop {
        match TcpStream::connect_timeout(&target, Duration::from_secs(1)) {
            Ok(mut stream) => {
                stream.write_all(&header(rank, nodes))?;
                return Ok(stream);
            }
            Err(e) if Instant::now() > deadline => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("node {rank} could not reach node 0 at {address}: {e}"),
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn header(rank: usize, nodes: usize) -> Vec<u8> {
    [rank as u64, nodes as u64]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

fn read_header(stream: &mut TcpStream) -> io::Result<[usize; 2]> {
    let mut bytes = [0u8; 16];
    stream.read_exact(&mut bytes)?;
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
    Ok([word(0), word(1)])
}

/// A length, then the values, little-endian.
fn send(link: &mut TcpStream, values: &[f32]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + 4 * values.len());
    bytes.extend((values.len() as u64).to_le_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    link.write_all(&bytes)
}

/// Reads a peer's values and folds each into `values` with `fold`; its length must match.
fn receive_into(
    link: &mut TcpStream,
    values: &mut [f32],
    peer: usize,
    fold: impl Fn(&mut f32, f32),
) -> io::Result<()> {
    let mut len = [0u8; 8];
    link.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len) as usize;
    if len != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "node {peer} sent {len} gradient values, this node has {}: different models?",
                values.len()
            ),
        ));
    }
    let mut bytes = vec![0u8; 4 * len];
    link.read_exact(&mut bytes)?;
    for (slot, chunk) in values.iter_mut().zip(bytes.chunks_exact(4)) {
        fold(slot, f32::from_le_bytes(chunk.try_into().unwrap()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_address() -> String {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    }

    #[test]
    fn three_nodes_sum_in_rank_order_and_all_get_the_sum() {
        let address = free_address();
        let threads: Vec<_> = (0..3)
            .map(|rank| {
                let address = address.clone();
                std::thread::spawn(move || {
                    let group =
                        NodeGroup::join(rank, 3, &address, Duration::from_secs(20)).unwrap();
                    let mut values = vec![rank as f32 + 1.0, 0.5 * rank as f32];
                    group.sum(&mut values).unwrap();
                    group.sum(&mut values).unwrap();
                    values
                })
            })
            .collect();
        for thread in threads {
            // (1 + 2 + 3) summed again three times over; (0 + 0.5 + 1) likewise.
            assert_eq!(thread.join().unwrap(), [18.0, 4.5]);
        }
    }

    #[test]
    fn disagreements_are_clear_errors() {
        assert!(
            NodeGroup::join(2, 2, "127.0.0.1:1", Duration::from_secs(1))
                .unwrap_err()
                .to_string()
                .contains("node rank 2 of 2 nodes")
        );

        // A node that believes in another number of nodes.
        let address = free_address();
        let root = {
            let address = address.clone();
            std::thread::spawn(move || NodeGroup::join(0, 2, &address, Duration::from_secs(20)))
        };
        let stray = connect(1, 3, &address, Duration::from_secs(20)).unwrap();
        let error = root.join().unwrap().unwrap_err().to_string();
        assert!(
            error.contains("rank 1 of 3 nodes; this run has 2"),
            "{error}"
        );
        drop(stray);

        // Gradients of another length.
        let address = free_address();
        let other = {
            let address = address.clone();
            std::thread::spawn(move || {
                let group = NodeGroup::join(1, 2, &address, Duration::from_secs(20)).unwrap();
                let _ = group.sum(&mut [1.0, 2.0, 3.0]);
            })
        };
        let group = NodeGroup::join(0, 2, &address, Duration::from_secs(20)).unwrap();
        let error = group.sum(&mut [1.0, 2.0]).unwrap_err().to_string();
        assert!(
            error.contains("node 1 sent 3 gradient values, this node has 2"),
            "{error}"
        );
        drop(group);
        other.join().unwrap();

        // Nobody joins in time.
        let error = NodeGroup::join(0, 2, &free_address(), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(error.contains("nodes [1] did not connect"), "{error}");
    }
}
