//! Client commands: talk to a running server with `TOLLGATE_URL` and `TOLLGATE_TOKEN`, print
//! human-readable output (or the raw JSON with `--json`).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::{Value, json};

use crate::cli::{RequestCommand, println_out};

/// Connection settings for client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API token.
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// `tollgate ready`: 0 when `GET /readyz` answers 200, else 1, printing why.
///
/// # Errors
/// Never for a server that is not ready (that is exit code 1); only when no HTTP client can be built.
pub async fn ready(url: &str) -> anyhow::Result<i32> {
    let http = tollgate_engine::http::client(Duration::from_secs(5))?;
    let url = format!("{}/readyz", url.trim_end_matches('/'));
    match http.get(&url).header(reqwest::header::USER_AGENT, crate::USER_AGENT).send().await {
        Ok(resp) if resp.status().is_success() => {
            println_out("ready");
            Ok(0)
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            let detail = value["error"]["detail"].as_str().unwrap_or("");
            println_out(&format!("not ready ({status}): {detail}"));
            Ok(1)
        }
        Err(e) => {
            println_out(&format!("not ready: cannot reach {url}: {e}"));
            Ok(1)
        }
    }
}

/// A small API client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    /// A client for `args`.
    ///
    /// # Errors
    /// Missing token or an unusable URL.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token =
            args.token.clone().filter(|t| !t.is_empty()).context(
                "no API token: set TOLLGATE_TOKEN or pass --token (create one with `tollgate token create`)",
            )?;
        let http = tollgate_engine::http::client(Duration::from_secs(30))?;
        Ok(Self { http, base: args.url.trim_end_matches('/').to_owned(), token })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::USER_AGENT, crate::USER_AGENT);
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let detail = value["error"]["detail"].as_str().unwrap_or("");
            anyhow::bail!("{} {code}: {detail}", status.as_u16());
        }
        Ok(value)
    }

    /// Approve or deny.
    ///
    /// # Errors
    /// The server's refusal.
    pub async fn decide(
        &self,
        id: &str,
        decision: &str,
        comment: Option<String>,
        as_json: bool,
    ) -> anyhow::Result<i32> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/requests/{id}/decisions"),
                Some(json!({ "decision": decision, "comment": comment })),
                None,
            )
            .await?;
        print_request(&v, as_json);
        Ok(0)
    }
}

/// Runs a `request` subcommand.
///
/// # Errors
/// The server's refusal or a connection failure.
pub async fn request(command: RequestCommand) -> anyhow::Result<i32> {
    match command {
        RequestCommand::Create {
            integration,
            scopes,
            duration,
            justification,
            kind,
            grant,
            break_glass,
            idempotency_key,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "integration": integration, "kind": kind, "scopes": scopes, "duration": duration, "justification": justification, "grant": grant });
            if break_glass {
                body["break_glass"] = json!(true);
            }
            let v = c.call(reqwest::Method::POST, "/v1/requests", Some(body), idempotency_key.as_deref()).await?;
            print_request(&v, client.json);
        }
        RequestCommand::Show { id, client } => {
            let v = Client::new(&client)?.call(reqwest::Method::GET, &format!("/v1/requests/{id}"), None, None).await?;
            print_request(&v, client.json);
        }
        RequestCommand::List { status, requester, integration, client } => {
            let mut query = Vec::new();
            for (k, v) in [("status", status), ("requester", requester), ("integration", integration)] {
                if let Some(v) = v {
                    query.push(format!("{k}={}", urlencode(&v)));
                }
            }
            let path =
                if query.is_empty() { "/v1/requests".to_owned() } else { format!("/v1/requests?{}", query.join("&")) };
            let v = Client::new(&client)?.call(reqwest::Method::GET, &path, None, None).await?;
            if client.json {
                println_out(&v.to_string());
            } else {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                println_out(&format!(
                    "{:<36}  {:<18}  {:<12}  {:<20}  SCOPES",
                    "ID", "STATUS", "REQUESTER", "INTEGRATION"
                ));
                for r in items {
                    println_out(&format!(
                        "{:<36}  {:<18}  {:<12}  {:<20}  {}",
                        s(&r["id"]),
                        s(&r["status"]),
                        s(&r["requester"]),
                        s(&r["integration"]),
                        join(&r["scopes"])
                    ));
                }
            }
        }
        RequestCommand::Cancel { id, client } => {
            let v = Client::new(&client)?
                .call(reqwest::Method::POST, &format!("/v1/requests/{id}/cancel"), None, None)
                .await?;
            print_request(&v, client.json);
        }
    }
    Ok(0)
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| if v.is_null() { "-".to_owned() } else { v.to_string() }, str::to_owned)
}

fn join(v: &Value) -> String {
    v.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(",")).unwrap_or_default()
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_request(v: &Value, as_json: bool) {
    if as_json {
        println_out(&v.to_string());
        return;
    }
    println_out(&format!("request     {}", s(&v["id"])));
    println_out(&format!("status      {}", s(&v["status"])));
    println_out(&format!("kind        {}", s(&v["kind"])));
    println_out(&format!("requester   {}", s(&v["requester"])));
    println_out(&format!("integration {} [{}] for {}", s(&v["integration"]), join(&v["scopes"]), s(&v["duration"])));
    println_out(&format!("workflow    {} v{}", s(&v["workflow"]["key"]), s(&v["workflow"]["version"])));
    println_out(&format!("why         {}", s(&v["justification"])));
    for a in v["approvals"].as_array().into_iter().flatten() {
        println_out(&format!(
            "decision    {} by {} at {} ({})",
            s(&a["decision"]),
            s(&a["approver"]),
            s(&a["decided_at"]),
            s(&a["comment"])
        ));
    }
    if let Some(g) = v["grant"].as_object() {
        println_out(&format!("grant       {} {} until {}", s(&g["id"]), s(&g["status"]), s(&g["expires_at"])));
    }
    if !v["reason"].is_null() {
        println_out(&format!("reason      {}", s(&v["reason"])));
    }
}
