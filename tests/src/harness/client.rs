//! A small JSON client for the API, acting as one principal (or as nobody).

use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// A whole response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: HeaderMap,
    /// Body as JSON (`Null` when empty or not JSON).
    pub body: Value,
    /// Body as text.
    pub text: String,
}

impl Reply {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// API client bound to a server (whose address survives restarts) and a bearer token.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: Arc<RwLock<String>>,
    token: Option<String>,
}

impl ApiClient {
    pub(crate) fn new(base: Arc<RwLock<String>>, token: Option<String>) -> anyhow::Result<Self> {
        let http = tollgate_engine::http::client(Duration::from_secs(20))?;
        Ok(Self { http, base, token })
    }

    /// The same server with another token (`None`: unauthenticated).
    #[must_use]
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self { http: self.http.clone(), base: self.base.clone(), token: token.map(str::to_owned) }
    }

    /// The server's base URL.
    #[must_use]
    pub fn base_url(&self) -> String {
        self.base.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A request builder with the token set.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base_url()));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request built with [`ApiClient::request`].
    ///
    /// # Errors
    /// Transport failures.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Reply> {
        let resp = req.send().await.context("request failed")?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.context("cannot read the response body")?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Reply { status, headers, body, text })
    }

    /// `GET path`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.send(self.request(Method::GET, path)).await?;
        Ok((r.status, r.body))
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self.send(self.request(Method::POST, path).json(body)).await?;
        Ok((r.status, r.body))
    }

    /// `POST /v1/requests`; returns the created request, failing unless 201.
    ///
    /// # Errors
    /// Any other status.
    pub async fn create_request(&self, body: &Value) -> anyhow::Result<Value> {
        let (status, v) = self.post("/v1/requests", body).await?;
        if status != 201 {
            bail!("POST /v1/requests {body} answered {status}: {v}");
        }
        Ok(v)
    }

    /// `POST /v1/requests/{id}/decisions` with `approve` or `deny`.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn decide(&self, id: &str, decision: &str) -> anyhow::Result<(u16, Value)> {
        self.post(&format!("/v1/requests/{id}/decisions"), &serde_json::json!({ "decision": decision })).await
    }

    /// `GET /v1/requests/{id}`, failing unless 200.
    ///
    /// # Errors
    /// Any other status.
    pub async fn request_view(&self, id: &str) -> anyhow::Result<Value> {
        let (status, v) = self.get(&format!("/v1/requests/{id}")).await?;
        if status != 200 {
            bail!("GET /v1/requests/{id} answered {status}: {v}");
        }
        Ok(v)
    }

    /// Polls the request until its status is `status`; returns it.
    ///
    /// # Errors
    /// On timeout, with the last state seen.
    pub async fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.request_view(id).await?;
            if v["status"] == status {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                bail!("request {id} did not reach {status} within {timeout:?}; last seen: {v:#}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every audit record (of one request, when given), oldest first, following cursors.
    /// Needs an admin or auditor token.
    ///
    /// # Errors
    /// Any status but 200.
    pub async fn audit(&self, request: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = "/v1/audit?limit=1000".to_owned();
            if let Some(r) = request {
                path.push_str(&format!("&request={r}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, v) = self.get(&path).await?;
            if status != 200 {
                bail!("GET {path} answered {status}: {v}");
            }
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }
}
