//! The server (`phi_zoo::serve`) through HTTP, as clients see it: completions equal generation
//! run alone, streams equal whole responses, echoed log-probabilities are the forward pass's,
//! concurrent requests share decode steps, a client that hangs up frees its row, and bad
//! requests get OpenAI's error objects while the server keeps serving.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::tensor::activation::log_softmax;
use phi_zoo::backend::Cpu;
use phi_zoo::serve::{ChatTemplate, ServeOptions, Server};
use phi_zoo::{GenerationConfig, Phi, PhiConfig, PhiTokenizer, Variant, generate, generate_text};
use serde_json::{Value, json};

use crate::fixtures;

const NAME: &str = "tiny-test";

/// Positions per request: long enough that a hang-up is seen long before the end.
const CONTEXT: usize = 2048;

/// One random tiny model with Phi's vocabulary for every test (initialising it in a debug build
/// takes seconds).
fn model() -> Phi<Cpu> {
    static MODEL: Mutex<Option<Phi<Cpu>>> = Mutex::new(None);
    let mut model = MODEL.lock().unwrap_or_else(|e| e.into_inner());
    model
        .get_or_insert_with(|| {
            let config = PhiConfig {
                max_position_embeddings: CONTEXT,
                ..Variant::Tiny.config()
            };
            Phi::new(&config, &Default::default())
        })
        .clone()
}

struct Running {
    server: Server,
    phi: Phi<Cpu>,
    tokenizer: PhiTokenizer,
}

impl Running {
    fn start(adjust: impl FnOnce(&mut ServeOptions)) -> Self {
        let device = Default::default();
        let phi = model();
        let mut options = ServeOptions {
            port: 0,
            max_batch: 4,
            prefill_chunk: 8,
            ..ServeOptions::named(NAME)
        };
        adjust(&mut options);
        let server = Server::start(phi.clone(), PhiTokenizer::bundled(), device, options).unwrap();
        Self {
            server,
            phi,
            tokenizer: PhiTokenizer::bundled(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    fn post(&self, path: &str, body: &str) -> (u16, Value) {
        self.post_with(path, body, &[])
    }

    fn post_with(&self, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut request = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(120))
            .set("Content-Type", "application/json");
        for (name, value) in headers {
            request = request.set(name, value);
        }
        reply(request.send_string(body))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        reply(ureq::get(&self.url(path)).call())
    }

    /// A streamed request's `data:` payloads, in order.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let response = ureq::post(&self.url(path))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .unwrap();
        assert_eq!(
            response.header("Content-Type"),
            Some("text/event-stream"),
            "a stream is server-sent events"
        );
        BufReader::new(response.into_reader())
            .lines()
            .map(Result::unwrap)
            .filter_map(|line| line.strip_prefix("data: ").map(str::to_owned))
            .collect()
    }

    fn greedy(&self, prompt: &str, max_new_tokens: usize) -> (Vec<u32>, String) {
        let config = GenerationConfig {
            max_new_tokens,
            ..GenerationConfig::for_model(self.phi.config(), Some(&self.tokenizer))
        };
        let ids = self.tokenizer.encode(prompt).unwrap();
        let out = generate_text(
            &self.phi,
            &self.tokenizer,
            &ids,
            &config,
            &[],
            &Default::default(),
            |_| {},
        )
        .unwrap();
        (out.ids, out.text)
    }
}

fn reply(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

#[test]
fn a_greedy_completion_is_what_generation_alone_produces() {
    let running = Running::start(|_| {});
    let prompt = "def fibonacci(n):";
    let (_, text) = running.greedy(prompt, 12);
    let (status, body) = running.post(
        "/v1/completions",
        &json!({"model": NAME, "prompt": prompt, "max_tokens": 12, "temperature": 0}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], text);
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    let prompt_tokens = running.tokenizer.encode(prompt).unwrap().len();
    assert_eq!(body["usage"]["prompt_tokens"], prompt_tokens);
    assert_eq!(body["usage"]["completion_tokens"], 12);

    // Token-id prompts, lists of prompts and n: choice p·n + c is prompt p's sample c, seeded
    // seed + c, as `generate` with that seed.
    let ids = running.tokenizer.encode(prompt).unwrap();
    let (status, body) = running.post(
        "/v1/completions",
        &json!({"prompt": [ids, ids[..3]], "max_tokens": 6, "temperature": 0.8, "seed": 40,
                "n": 2, "top_k": 50})
        .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let choices = body["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (index, choice) in choices.iter().enumerate() {
        let (p, c) = (index / 2, index % 2);
        let prompt_ids = if p == 0 {
            ids.clone()
        } else {
            ids[..3].to_vec()
        };
        let config = GenerationConfig {
            max_new_tokens: 6,
            sampling: Some(phi_zoo::Sampling {
                temperature: 0.8,
                top_k: Some(50),
                top_p: None,
                min_p: None,
            }),
            seed: 40 + c as u64,
            ..GenerationConfig::for_model(running.phi.config(), Some(&running.tokenizer))
        };
        let alone = generate(
            &running.phi,
            &prompt_ids,
            &config,
            &Default::default(),
            |_| ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(choice["index"], index);
        assert_eq!(
            choice["text"],
            running.tokenizer.decode(&alone.ids).unwrap(),
            "choice {index}"
        );
    }
}

#[test]
fn a_stream_is_the_whole_response_in_pieces() {
    let running = Running::start(|_| {});
    let body = json!({"model": NAME, "prompt": "The sky is", "max_tokens": 10, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}});
    let chunks = running.stream("/v1/completions", &body);
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let usage = parsed.last().unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 10, "{usage}");
    let text: String = parsed
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap())
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let finish: Vec<&Value> = parsed
        .iter()
        .flat_map(|c| c["choices"].as_array().unwrap())
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, [&json!("length")]);
    assert_eq!(text, running.greedy("The sky is", 10).1);

    // Chat: the role first, then content, in phi-2's QA format.
    let body = json!({"messages": [{"role": "user", "content": "Name a colour."}],
                      "max_tokens": 8, "temperature": 0, "stream": true});
    let chunks = running.stream("/v1/chat/completions", &body);
    let parsed: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    assert_eq!(parsed[0]["object"], "chat.completion.chunk");
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let prompt = "Instruct: Name a colour.\nOutput:";
    let ids = running.tokenizer.encode(prompt).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 8,
        ..GenerationConfig::for_model(running.phi.config(), Some(&running.tokenizer))
    };
    let alone = generate_text(
        &running.phi,
        &running.tokenizer,
        &ids,
        &config,
        &ChatTemplate::default().stop,
        &Default::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(content, alone.text);
}

#[test]
fn echoed_log_probabilities_are_the_forward_passes() {
    let running = Running::start(|_| {});
    let prompt = "Water freezes at zero degrees";
    let ids = running.tokenizer.encode(prompt).unwrap();
    // What lm-evaluation-harness' local-completions sends for log-likelihoods.
    let (status, body) = running.post(
        "/v1/completions",
        &json!({"model": NAME, "prompt": [ids], "max_tokens": 1, "temperature": 0,
                "logprobs": 1, "echo": true, "seed": 1234})
        .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let lp = &body["choices"][0]["logprobs"];
    let token_logprobs = lp["token_logprobs"].as_array().unwrap();
    assert_eq!(
        token_logprobs.len(),
        ids.len() + 1,
        "prompt and one new token"
    );
    assert!(
        token_logprobs[0].is_null(),
        "nothing predicts the first token"
    );
    assert!(lp["top_logprobs"][0].is_null());
    let logits = running
        .phi
        .forward_ids(std::slice::from_ref(&ids), &Default::default())
        .unwrap();
    let reference = fixtures::to_vec(log_softmax(logits, 2));
    let vocab = running.phi.config().vocab_size;
    for i in 1..ids.len() {
        let got = token_logprobs[i].as_f64().unwrap() as f32;
        let want = reference[(i - 1) * vocab + ids[i] as usize];
        assert!((got - want).abs() < 1e-4, "token {i}: {got} vs {want}");
    }
    // The generated (greedy) token's own value and its top-1 entry are one number.
    let last = token_logprobs.last().unwrap();
    let top = lp["top_logprobs"].as_array().unwrap().last().unwrap();
    let top_value = top.as_object().unwrap().values().next().unwrap();
    assert_eq!(last, top_value);
    assert_eq!(lp["tokens"].as_array().unwrap().len(), ids.len() + 1);
    assert_eq!(
        body["choices"][0]["text"].as_str().unwrap(),
        lp["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect::<String>()
    );
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], 0);
    assert!(offsets.windows(2).all(|w| w[0] < w[1]));

    // Twenty alternatives reach into the untrained padding of the vocabulary (ids the tokenizer
    // has no text for): they are named by id.
    let (status, body) = running.post(
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 4, "logprobs": 20, "echo": true}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let tops = body["choices"][0]["logprobs"]["top_logprobs"]
        .as_array()
        .unwrap();
    assert!(
        tops.iter()
            .skip(1)
            .all(|t| t.as_object().unwrap().len() <= 20)
    );
}

#[test]
fn concurrent_requests_share_decode_steps_and_each_equals_its_run_alone() {
    let running = Running::start(|o| o.max_batch = 4);
    let prompts = [
        "import numpy as np",
        "def add(a, b):",
        "The capital of France",
        "Once upon a time, in a land far away,",
        "1, 2, 3,",
        "class Tree:",
    ];
    let results: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, prompt)| {
                let running = &running;
                scope.spawn(move || {
                    running.post(
                        "/v1/completions",
                        &json!({"prompt": prompt, "max_tokens": 20 + 5 * i, "temperature": 0})
                            .to_string(),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, (prompt, (status, body))) in prompts.iter().zip(&results).enumerate() {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            body["choices"][0]["text"],
            running.greedy(prompt, 20 + 5 * i).1,
            "prompt {i}"
        );
    }
    let (_, health) = running.get("/health");
    let stats = &health["engine"]["stats"];
    assert!(
        stats["rows_decoded"].as_u64() > stats["decode_steps"].as_u64(),
        "requests were decoded together: {health}"
    );
}

#[test]
fn a_client_that_hangs_up_frees_its_row() {
    let running = Running::start(|_| {});
    let body = json!({"prompt": "Tell me a long story.", "max_tokens": 2000, "temperature": 0,
                      "stream": true});
    let response = ureq::post(&running.url("/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    let mut lines = BufReader::new(response.into_reader()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");
    drop(lines); // closes the connection
    let started = Instant::now();
    loop {
        let (_, health) = running.get("/health");
        if health["engine"]["running"] == 0 && health["engine"]["queued"] == 0 {
            let decoded = health["engine"]["stats"]["rows_decoded"].as_u64().unwrap();
            assert!(decoded < 1500, "the row ran on after the hang-up: {health}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the row was never freed: {health}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And the server serves the next client.
    let (status, _) = running.post("/v1/completions", r#"{"prompt": "hi", "max_tokens": 2}"#);
    assert_eq!(status, 200);
}

#[test]
fn bad_requests_get_openai_error_objects_and_the_server_goes_on() {
    let running = Running::start(|o| {
        o.api_key = Some("sesame".into());
        o.body_limit = 4096;
    });
    let key = [("Authorization", "Bearer sesame")];
    let cases: &[(&str, String, u16, Option<&str>)] = &[
        ("/v1/completions", "{not json".into(), 400, None),
        ("/v1/completions", "[1, 2]".into(), 400, None),
        (
            "/v1/completions",
            r#"{"prompt": "a", "max_tokens": "many"}"#.into(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": {"a": 1}}"#.into(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            r#"{"max_tokens": 3}"#.into(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "", "max_tokens": 3}"#.into(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": [999999]}"#.into(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "model": "gpt-5"}"#.into(),
            404,
            Some("model"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "max_tokens": 2048}"#.into(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "max_tokens": -1}"#.into(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "n": 0}"#.into(),
            400,
            Some("n"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "n": 1000}"#.into(),
            400,
            Some("n"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "logprobs": 21}"#.into(),
            400,
            Some("logprobs"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "temperature": -1}"#.into(),
            400,
            Some("temperature"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "top_p": 0}"#.into(),
            400,
            Some("top_p"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "top_k": -5}"#.into(),
            400,
            Some("top_k"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "min_p": 2}"#.into(),
            400,
            Some("min_p"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "repetition_penalty": 0}"#.into(),
            400,
            Some("repetition_penalty"),
        ),
        (
            "/v1/completions",
            r#"{"prompt": "a", "stop": 5}"#.into(),
            400,
            Some("stop"),
        ),
        (
            "/v1/completions",
            format!(r#"{{"prompt": "{}"}}"#, "a".repeat(5000)),
            413,
            None,
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": []}"#.into(),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            r#"{"messages": [{"role": "robot", "content": "x"}]}"#.into(),
            400,
            Some("messages[0].role"),
        ),
        ("/tokenize", r#"{"text": "a"}"#.into(), 400, Some("prompt")),
        (
            "/detokenize",
            r#"{"tokens": [-1]}"#.into(),
            400,
            Some("tokens"),
        ),
        ("/v1/nowhere", "{}".into(), 404, None),
    ];
    for (path, body, status, param) in cases {
        let (got, error) = running.post_with(path, body, &key);
        assert_eq!(got, *status, "{path} {body:.80}: {error}");
        let object = &error["error"];
        assert!(
            object["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
        assert!(object["type"].is_string(), "{error}");
        if let Some(param) = param {
            assert_eq!(object["param"], *param, "{path} {body:.80}: {error}");
        }
    }
    // Keys: none, wrong; health needs none.
    let (status, error) = running.post("/v1/completions", r#"{"prompt": "a"}"#);
    assert_eq!(
        (status, &error["error"]["code"]),
        (401, &json!("invalid_api_key"))
    );
    let wrong = [("Authorization", "Bearer open")];
    let (status, _) = running.post_with("/v1/completions", r#"{"prompt": "a"}"#, &wrong);
    assert_eq!(status, 401);
    let (status, _) = running.get("/health");
    assert_eq!(status, 200);
    let (status, error) = reply(
        ureq::get(&running.url("/v1/completions"))
            .set("Authorization", "Bearer sesame")
            .call(),
    );
    assert_eq!(status, 405, "{error}");
    // Still serving.
    let (status, body) = running.post_with(
        "/v1/completions",
        r#"{"prompt": "a", "max_tokens": 3, "temperature": 0}"#,
        &key,
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tokenizer_and_model_endpoints() {
    let running = Running::start(|_| {});
    let (_, info) = running.get("/tokenizer_info");
    assert_eq!(info["eos_token"], "<|endoftext|>");
    let (_, tokens) = running.post("/tokenize", r#"{"prompt": "<|endoftext|>def f(x):"}"#);
    let ids: Vec<u32> = serde_json::from_value(tokens["tokens"].clone()).unwrap();
    assert_eq!(ids[0], 50256, "the end-of-text token is one special token");
    assert_eq!(
        ids,
        running.tokenizer.encode("<|endoftext|>def f(x):").unwrap()
    );
    let (_, text) = running.post("/detokenize", &json!({"tokens": ids}).to_string());
    assert_eq!(text["prompt"], "<|endoftext|>def f(x):");
    let (_, models) = running.get("/v1/models");
    assert_eq!(models["data"][0]["id"], NAME);
    assert_eq!(models["data"][0]["max_model_len"], CONTEXT);
}
