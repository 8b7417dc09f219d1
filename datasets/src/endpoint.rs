//! A client of an OpenAI-compatible completions endpoint (vLLM, TGI, llama.cpp's server, phi-zoo's
//! own `serve`), for the stages that ask a language model: annotate and synthesize. Blocking
//! (one request per worker thread), with retries: a 429, a 5xx, a dropped connection or a timeout
//! is retried after an exponentially growing, jittered wait (or the server's `Retry-After`);
//! any other failure, and a reply that is not what the API promises, is reported at once.

use std::time::Duration;

use serde_json::Value;

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The server's base URL (`http://host:port`, with or without a trailing `/v1`).
    pub base_url: String,
    /// The model name sent with each request.
    pub model: String,
    /// A bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// The limit on one request, connection to last byte.
    pub timeout: Duration,
    /// Attempts after the first, for failures worth retrying.
    pub retries: u32,
    /// The first wait between attempts; each next one doubles, up to `max_backoff`.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

/// Why a request failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFailure {
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, as the server or the transport told it.
    pub message: String,
}

impl std::fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (after {} attempt(s))", self.message, self.attempts)
    }
}

/// One attempt's outcome.
enum Attempt {
    Done(Value),
    /// Worth another try, after at least the given wait (a `Retry-After`).
    Retry(String, Option<Duration>),
    Fail(String),
}

impl Endpoint {
    /// An endpoint with the defaults: 10 minutes per request, 6 retries from 0.5 s up to 30 s.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(600),
            retries: 6,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }

    /// The URL of an API route (`completions`, `models`).
    pub fn url(&self, route: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/{route}")
    }

    /// POSTs `body` (with `model` set) to `/v1/completions` and returns the reply, retrying
    /// what is worth retrying.
    pub fn completions(&self, body: &Value) -> Result<Value, RequestFailure> {
        let mut body = body.clone();
        body["model"] = Value::String(self.model.clone());
        let text = body.to_string();
        let url = self.url("completions");
        let agent = ureq::AgentBuilder::new().timeout(self.timeout).build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut request = agent.post(&url).set("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                request = request.set("Authorization", &format!("Bearer {key}"));
            }
            let (message, at_least) = match attempt(request.send_string(&text)) {
                Attempt::Done(reply) => return Ok(reply),
                Attempt::Fail(message) => return Err(RequestFailure { attempts, message }),
                Attempt::Retry(message, at_least) => (message, at_least),
            };
            if attempts > self.retries {
                return Err(RequestFailure { attempts, message });
            }
            std::thread::sleep(self.wait(attempts, at_least));
        }
    }

    /// The wait before attempt `attempts + 1`: the doubling backoff with ±25% jitter (so that
    /// many workers do not retry in step), at least what the server asked for.
    fn wait(&self, attempts: u32, at_least: Option<Duration>) -> Duration {
        let doubled = self
            .backoff
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(self.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.75 + 0.5 * f64::from(nanos % 1000) / 1000.0;
        doubled
            .mul_f64(jitter)
            .max(at_least.unwrap_or_default().min(Duration::from_secs(120)))
    }
}

fn attempt(response: Result<ureq::Response, ureq::Error>) -> Attempt {
    match response {
        Ok(response) => {
            let text = match response.into_string() {
                Ok(text) => text,
                // The body broke off: the connection dropped mid-reply.
                Err(e) => return Attempt::Retry(format!("reading the reply: {e}"), None),
            };
            match serde_json::from_str(&text) {
                Ok(value) => Attempt::Done(value),
                Err(e) => Attempt::Fail(format!("the reply is not JSON ({e}): {}", clip(&text))),
            }
        }
        Err(ureq::Error::Status(status, response)) => {
            let retry_after = response
                .header("Retry-After")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.into_string().unwrap_or_default();
            let message = format!("HTTP {status}: {}", server_message(&body));
            if status == 429 || status >= 500 {
                Attempt::Retry(message, retry_after)
            } else {
                Attempt::Fail(message)
            }
        }
        Err(ureq::Error::Transport(e)) => Attempt::Retry(format!("transport: {e}"), None),
    }
}

/// OpenAI's `error.message` when the body is an error object, else the body itself, clipped.
fn server_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| clip(body))
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(300);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The text of choice `index` of a completions reply.
pub fn choice_text(reply: &Value, index: usize) -> Result<&str, String> {
    reply["choices"][index]["text"].as_str().ok_or_else(|| {
        format!(
            "the reply has no choices[{index}].text: {}",
            clip(&reply.to_string())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_take_the_base_with_or_without_v1() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/v1",
            "http://h:1/v1/",
        ] {
            assert_eq!(
                Endpoint::new(base, "m").url("completions"),
                "http://h:1/v1/completions"
            );
        }
    }

    #[test]
    fn waits_double_with_jitter_and_honour_retry_after() {
        let e = Endpoint::new("http://h", "m");
        let first = e.wait(1, None);
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625));
        let fourth = e.wait(4, None);
        assert!(fourth >= Duration::from_secs(3) && fourth <= Duration::from_secs(5));
        assert!(e.wait(20, None) <= Duration::from_millis(37_500));
        assert!(e.wait(1, Some(Duration::from_secs(7))) >= Duration::from_secs(7));
    }
}
