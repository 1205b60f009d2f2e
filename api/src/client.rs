//! Client commands: talk to a running server and print human-readable output (or the server's
//! JSON with `--json`). The server and the token come from `--url`/`--token`, else
//! `TOLLGATE_URL`/`TOLLGATE_TOKEN`, else the credentials file `tollgate login` wrote.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::{CredentialsCommand, GrantCommand, RequestCommand, TaskCommand, eprintln_err, println_out};

/// The server client commands talk to when neither flags, environment nor credentials name one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Connection settings for client commands.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL [default: the one `tollgate login` stored, else http://127.0.0.1:8080].
    #[arg(long, env = "TOLLGATE_URL")]
    pub url: Option<String>,
    /// API token [default: the one `tollgate login` stored for that URL].
    #[arg(long, env = "TOLLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

// ---- credentials (`tollgate login`) -------------------------------------------------------

/// What `tollgate login` stores.
#[derive(Debug, Clone, Deserialize)]
pub struct Credentials {
    /// Server URL.
    pub url: String,
    /// API token.
    pub token: String,
    /// Who the token authenticated as when stored (for display only).
    #[serde(default)]
    pub principal: Option<String>,
}

/// Where the credentials file is: `$TOLLGATE_CREDENTIALS`, else
/// `$XDG_CONFIG_HOME/tollgate/credentials.toml`, else `$HOME/.config/tollgate/credentials.toml`
/// (`None` when none of these is set).
#[must_use]
pub fn credentials_path() -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("TOLLGATE_CREDENTIALS") {
        return Some(p);
    }
    // The XDG specification ignores a relative XDG_CONFIG_HOME.
    if let Some(dir) = var("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
        return Some(dir.join("tollgate").join("credentials.toml"));
    }
    var("HOME").map(|home| home.join(".config").join("tollgate").join("credentials.toml"))
}

/// Reads the credentials file; `Ok(None)` when there is none.
///
/// # Errors
/// A file that exists but cannot be read or is not valid.
pub fn read_credentials(path: &Path) -> anyhow::Result<Option<Credentials>> {
    use figment::Figment;
    use figment::providers::{Format as _, Toml};
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read the credentials file {}", path.display())),
    };
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            eprintln_err(&format!(
                "warning: {} holds an API token and is readable by others (mode {mode:04o}); run `chmod 600` on it",
                path.display()
            ));
        }
    }
    let creds: Credentials = Figment::from(Toml::string(&text)).extract().map_err(|e| {
        anyhow::anyhow!("invalid credentials file {}: {e} (run `tollgate login` again)", path.display())
    })?;
    Ok(Some(creds))
}

/// A TOML basic string (JSON's escapes are TOML's; the values never hold DEL, checked by login).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Writes the credentials file: readable by its owner only (0600), in a directory created
/// 0700, replaced atomically.
///
/// # Errors
/// When the directory or the file cannot be written.
pub fn write_credentials(path: &Path, creds: &Credentials) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt as _;
            builder.mode(0o700);
        }
        builder.create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = format!(
        "# Tollgate CLI credentials, written by `tollgate login`. Keep this file private.\nurl = {}\ntoken = {}\n",
        toml_string(&creds.url),
        toml_string(&creds.token)
    );
    if let Some(p) = &creds.principal {
        text.push_str(&format!("principal = {}\n", toml_string(p)));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// Two URLs naming the same server (scheme, host and port compared as URLs; a trailing `/`
/// does not count).
fn same_server(a: &str, b: &str) -> bool {
    let norm = |u: &str| {
        reqwest::Url::parse(u.trim())
            .map_or_else(|_| u.trim().to_owned(), |u| u.to_string())
            .trim_end_matches('/')
            .to_owned()
    };
    norm(a) == norm(b)
}

fn non_empty(v: Option<&String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The URL and token of a client command: flags, then environment (clap merges both into
/// `args`), then the credentials file. The file's token is used only with the file's URL, so a
/// token stored for one server is never sent to another.
fn resolve(args: &ClientArgs) -> anyhow::Result<(String, String)> {
    let (url, token) = (non_empty(args.url.as_ref()), non_empty(args.token.as_ref()));
    if let (Some(url), Some(token)) = (&url, &token) {
        return Ok((url.clone(), token.clone()));
    }
    let path = credentials_path();
    let stored = match &path {
        Some(p) => read_credentials(p)?,
        None => None,
    };
    let url = url.or_else(|| stored.as_ref().map(|c| c.url.clone())).unwrap_or_else(|| DEFAULT_URL.to_owned());
    if let Some(token) = token {
        return Ok((url, token));
    }
    match (stored, path) {
        (Some(c), _) if same_server(&c.url, &url) => Ok((url, c.token)),
        (Some(c), Some(p)) => anyhow::bail!(
            "no API token for {url}: the credentials in {} are for {}; set TOLLGATE_TOKEN, pass --token or run \
             `tollgate login --url {url}`",
            p.display(),
            c.url
        ),
        _ => anyhow::bail!(
            "no API token: set TOLLGATE_TOKEN, pass --token or run `tollgate login` (create a token with \
             `tollgate token create`)"
        ),
    }
}

// ---- the HTTP client ----------------------------------------------------------------------

/// `tollgate ready`: 0 when `GET /readyz` answers 200, else 1, printing why.
///
/// # Errors
/// Never for a server that is not ready (that is exit code 1); only when no HTTP client can be built.
pub async fn ready(url: &str, as_json: bool) -> anyhow::Result<i32> {
    let http = tollgate_engine::http::client(Duration::from_secs(5))?;
    let url = format!("{}/readyz", url.trim_end_matches('/'));
    let (ready, out) = match http.get(&url).header(reqwest::header::USER_AGENT, crate::USER_AGENT).send().await {
        Ok(resp) if resp.status().is_success() => {
            (true, json!({ "ready": true, "url": url, "status": resp.status().as_u16() }))
        }
        Ok(resp) => {
            let status = resp.status().as_u16();
            let value: Value = resp.json().await.unwrap_or(Value::Null);
            let detail = value["error"]["detail"].as_str().unwrap_or("").to_owned();
            (false, json!({ "ready": false, "url": url, "status": status, "detail": detail }))
        }
        Err(e) => {
            (false, json!({ "ready": false, "url": url, "status": null, "detail": format!("cannot reach {url}: {e}") }))
        }
    };
    if as_json {
        println_out(&out.to_string());
    } else if ready {
        println_out("ready");
    } else if out["status"].is_null() {
        println_out(&format!("not ready: {}", s(&out["detail"])));
    } else {
        println_out(&format!("not ready ({}): {}", out["status"], out["detail"].as_str().unwrap_or("")));
    }
    Ok(i32::from(!ready))
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
    /// Missing token, an unreadable credentials file, or an unusable URL.
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let (url, token) = resolve(args)?;
        Self::with(&url, token)
    }

    fn with(url: &str, token: String) -> anyhow::Result<Self> {
        let http = tollgate_engine::http::client(Duration::from_secs(30))?;
        Ok(Self { http, base: url.trim_end_matches('/').to_owned(), token })
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

    /// A call answering the status and the JSON body, whatever the status.
    async fn call_raw(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::USER_AGENT, crate::USER_AGENT);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body, None).await
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
            .post(&format!("/v1/requests/{id}/decisions"), Some(json!({ "decision": decision, "comment": comment })))
            .await?;
        print_request(&v, as_json);
        Ok(0)
    }
}

// ---- commands -----------------------------------------------------------------------------

/// `path?k=v&…` with the parameters that are set.
fn with_query(path: &str, params: &[(&str, Option<String>)]) -> String {
    let query: Vec<String> =
        params.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", urlencode(v)))).collect();
    if query.is_empty() { path.to_owned() } else { format!("{path}?{}", query.join("&")) }
}

/// How a listing prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListOutput {
    /// A table.
    Table,
    /// Ids only, one a line.
    Ids,
    /// The server's page object.
    Json,
}

impl ListOutput {
    fn new(as_json: bool, quiet: bool) -> Self {
        match (as_json, quiet) {
            (true, _) => Self::Json,
            (false, true) => Self::Ids,
            (false, false) => Self::Table,
        }
    }
}

/// Prints a page: its table (header, then one row per item), its ids or its JSON; then, on
/// standard error, how to get the next page if there is one.
fn print_page(page: &Value, output: ListOutput, header: &str, row: impl Fn(&Value) -> String) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    match output {
        ListOutput::Json => println_out(&page.to_string()),
        ListOutput::Ids => items.iter().for_each(|i| println_out(&s(&i["id"]))),
        ListOutput::Table => {
            println_out(header);
            items.iter().for_each(|i| println_out(&row(i)));
        }
    }
    if output != ListOutput::Json
        && let Some(next) = page["next_cursor"].as_str()
    {
        eprintln_err(&format!("more rows: --cursor {next}"));
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
            quiet,
            client,
        } => {
            let c = Client::new(&client)?;
            let mut body = json!({ "integration": integration, "kind": kind, "scopes": scopes, "duration": duration, "justification": justification, "grant": grant });
            if break_glass {
                body["break_glass"] = json!(true);
            }
            let v = c.call(reqwest::Method::POST, "/v1/requests", Some(body), idempotency_key.as_deref()).await?;
            if quiet {
                println_out(&s(&v["id"]));
            } else {
                print_request(&v, client.json);
            }
        }
        RequestCommand::Show { id, client } => {
            let v = Client::new(&client)?.get(&format!("/v1/requests/{id}")).await?;
            print_request(&v, client.json);
        }
        RequestCommand::List { status, requester, integration, limit, cursor, quiet, client } => {
            let path = with_query(
                "/v1/requests",
                &[
                    ("status", status),
                    ("requester", requester),
                    ("integration", integration),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let page = Client::new(&client)?.get(&path).await?;
            let header = format!("{:<36}  {:<18}  {:<12}  {:<20}  SCOPES", "ID", "STATUS", "REQUESTER", "INTEGRATION");
            print_page(&page, ListOutput::new(client.json, quiet), &header, |r| {
                format!(
                    "{:<36}  {:<18}  {:<12}  {:<20}  {}",
                    s(&r["id"]),
                    s(&r["status"]),
                    s(&r["requester"]),
                    s(&r["integration"]),
                    join(&r["scopes"])
                )
            });
        }
        RequestCommand::Cancel { id, client } => {
            let v = Client::new(&client)?.post(&format!("/v1/requests/{id}/cancel"), None).await?;
            print_request(&v, client.json);
        }
    }
    Ok(0)
}

/// Runs a `grant` subcommand.
///
/// # Errors
/// The server's refusal or a connection failure.
pub async fn grant(command: GrantCommand) -> anyhow::Result<i32> {
    match command {
        GrantCommand::List { status, integration, principal, limit, cursor, quiet, client } => {
            let path = with_query(
                "/v1/grants",
                &[
                    ("status", status),
                    ("principal", principal),
                    ("integration", integration),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let page = Client::new(&client)?.get(&path).await?;
            let header = format!(
                "{:<36}  {:<13}  {:<12}  {:<20}  {:<16}  SCOPES",
                "ID", "STATUS", "HOLDER", "INTEGRATION", "EXPIRES (UTC)"
            );
            print_page(&page, ListOutput::new(client.json, quiet), &header, |g| {
                format!(
                    "{:<36}  {:<13}  {:<12}  {:<20}  {:<16}  {}",
                    s(&g["id"]),
                    s(&g["status"]),
                    s(&g["principal"]),
                    s(&g["integration"]),
                    minute(&g["expires_at"]),
                    join(&g["scopes"])
                )
            });
        }
        GrantCommand::Show { id, client } => {
            let v = Client::new(&client)?.get(&format!("/v1/grants/{id}")).await?;
            print_grant(&v, client.json);
        }
        GrantCommand::Revoke { id, client } => {
            let v = Client::new(&client)?.post(&format!("/v1/grants/{id}/revoke"), None).await?;
            print_grant(&v, client.json);
        }
        GrantCommand::Secret { id, client } => {
            let v = Client::new(&client)?.post(&format!("/v1/grants/{}/secret", urlencode(&id)), None).await?;
            let secret = v["secret"].as_str().ok_or_else(|| anyhow::anyhow!("the server answered no secret"))?;
            // The secret alone (or the JSON), nothing else: it is meant to be piped.
            println_out(&if client.json { v.to_string() } else { secret.to_owned() });
        }
    }
    Ok(0)
}

/// Runs a `task` subcommand.
///
/// # Errors
/// The server's refusal or a connection failure.
pub async fn task(command: TaskCommand) -> anyhow::Result<i32> {
    match command {
        TaskCommand::List { status, limit, cursor, quiet, client } => {
            let path = with_query(
                "/v1/tasks",
                &[("status", status), ("limit", limit.map(|l| l.to_string())), ("cursor", cursor)],
            );
            let page = Client::new(&client)?.get(&path).await?;
            let header = format!(
                "{:<36}  {:<6}  {:<12}  {:<36}  {:<16}  INSTRUCTIONS",
                "ID", "STATUS", "OPERATOR", "REQUEST", "CREATED (UTC)"
            );
            print_page(&page, ListOutput::new(client.json, quiet), &header, |t| {
                format!(
                    "{:<36}  {:<6}  {:<12}  {:<36}  {:<16}  {}",
                    s(&t["id"]),
                    s(&t["status"]),
                    s(&t["operator"]),
                    s(&t["request"]),
                    minute(&t["created_at"]),
                    t["instructions"].as_str().and_then(|i| i.lines().next()).unwrap_or_default()
                )
            });
        }
        TaskCommand::Complete { id, failed, comment, client } => {
            let outcome = if failed { "failed" } else { "done" };
            let v = Client::new(&client)?
                .post(&format!("/v1/tasks/{id}/complete"), Some(json!({ "outcome": outcome, "comment": comment })))
                .await?;
            if client.json {
                println_out(&v.to_string());
            } else {
                for t in v["items"].as_array().into_iter().flatten() {
                    println_out(&format!("task        {}", s(&t["id"])));
                    println_out(&format!("status      {}", s(&t["status"])));
                    println_out(&format!("request     {}", s(&t["request"])));
                    println_out(&format!("resolved    by {} at {}", s(&t["resolved_by"]), s(&t["resolved_at"])));
                    if !t["comment"].is_null() {
                        println_out(&format!("comment     {}", s(&t["comment"])));
                    }
                }
            }
        }
    }
    Ok(0)
}

/// Runs a `credentials` subcommand.
///
/// # Errors
/// The server's refusal, a connection failure, or a file that cannot be read.
pub async fn credentials(command: CredentialsCommand) -> anyhow::Result<i32> {
    match command {
        CredentialsCommand::List {
            integration,
            owner,
            kind,
            expiring_before,
            status,
            limit,
            cursor,
            quiet,
            client,
        } => {
            let path = with_query(
                "/v1/credentials",
                &[
                    ("integration", integration),
                    ("owner", owner),
                    ("kind", kind),
                    ("expiring_before", expiring_before),
                    ("status", status),
                    ("limit", limit.map(|l| l.to_string())),
                    ("cursor", cursor),
                ],
            );
            let page = Client::new(&client)?.get(&path).await?;
            if quiet {
                for c in page["items"].as_array().into_iter().flatten() {
                    println_out(&s(&c["name"]));
                }
                if let Some(next) = page["next_cursor"].as_str() {
                    eprintln_err(&format!("more rows: --cursor {next}"));
                }
                return Ok(0);
            }
            let header = format!(
                "{:<32}  {:<19}  {:<20}  {:<12}  {:<7}  {:<16}  VERSION",
                "NAME", "KIND", "INTEGRATION", "OWNER", "STATUS", "EXPIRES (UTC)"
            );
            print_page(&page, ListOutput::new(client.json, false), &header, |c| {
                format!(
                    "{:<32}  {:<19}  {:<20}  {:<12}  {:<7}  {:<16}  {}",
                    s(&c["name"]),
                    s(&c["kind"]),
                    s(&c["integration"]),
                    s(&c["owner"]),
                    s(&c["status"]),
                    minute(&c["expires_at"]),
                    s(&c["current_version"])
                )
            });
        }
        CredentialsCommand::Show { name, client } => {
            let v = Client::new(&client)?.get(&format!("/v1/credentials/{}", urlencode(&name))).await?;
            if client.json {
                println_out(&v.to_string());
            } else {
                credential_lines(&v).iter().for_each(|l| println_out(l));
            }
        }
        CredentialsCommand::Import { file, format, dry_run, client } => {
            return import_credentials(&file, format.as_deref(), dry_run, &client).await;
        }
    }
    Ok(0)
}

/// The human view of a credential, line by line.
fn credential_lines(v: &Value) -> Vec<String> {
    let mut lines = vec![
        format!("credential  {}", s(&v["name"])),
        format!("id          {}", s(&v["id"])),
        format!("kind        {}", s(&v["kind"])),
        format!("integration {} ({})", s(&v["integration"]), s(&v["environment"])),
        format!("owner       {}", s(&v["owner"])),
        format!("scopes      {}", join(&v["scopes"])),
        format!("status      {}", s(&v["status"])),
        format!("issued      {}", s(&v["issued_at"])),
        format!("expires     {}", s(&v["expires_at"])),
        format!("last used   {}", s(&v["last_used_at"])),
        format!("rotated     {}", s(&v["last_rotated_at"])),
        format!("revocation  {}", s(&v["revocation"]["method"])),
    ];
    if !v["revocation"]["url"].is_null() {
        lines.push(format!("revoke at   {}", s(&v["revocation"]["url"])));
    }
    if !v["revocation"]["instructions"].is_null() {
        lines.push(format!("how         {}", s(&v["revocation"]["instructions"])));
    }
    if v["description"].as_str().is_some_and(|d| !d.is_empty()) {
        lines.push(format!("description {}", s(&v["description"])));
    }
    for ver in v["versions"].as_array().into_iter().flatten() {
        let secret = if ver["has_value"].as_bool() == Some(true) {
            format!("sealed value {}", ver["hint"].as_str().unwrap_or(""))
        } else if !ver["secret_ref"].is_null() {
            format!("ref {}", s(&ver["secret_ref"]))
        } else {
            "-".to_owned()
        };
        lines.push(format!(
            "version     v{} {} since {}: {}",
            s(&ver["version"]),
            s(&ver["state"]),
            minute(&ver["created_at"]),
            secret.trim_end()
        ));
    }
    lines
}

/// `tollgate credentials import`: reads and checks the file locally (a progress bar on a
/// terminal), then sends it; every invalid row is printed as `FILE:LINE: field: message` and
/// nothing is imported (exit 1).
async fn import_credentials(
    file: &Path,
    format: Option<&str>,
    dry_run: bool,
    args: &ClientArgs,
) -> anyhow::Result<i32> {
    use std::io::{IsTerminal as _, Read as _};
    use tollgate_engine::credential::{self, ImportFormat};
    let stdin = file.as_os_str() == "-";
    let format = match format {
        Some(f) => ImportFormat::parse(f).with_context(|| format!("--format {f:?}: use yaml or csv"))?,
        None if stdin => anyhow::bail!("reading standard input: pass --format yaml or --format csv"),
        None => ImportFormat::of_path(file)
            .with_context(|| format!("{}: cannot tell the format from the name; pass --format", file.display()))?,
    };
    let mut content = String::new();
    if stdin {
        std::io::stdin().read_to_string(&mut content).context("cannot read standard input")?;
    } else {
        content = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    }
    let shown = file.display().to_string();
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        let lines = content.lines().count() as u64;
        let bar = indicatif::ProgressBar::new(lines);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} rows")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message("checking");
        Some(bar)
    } else {
        None
    };
    let parsed = credential::parse(format, &content, &mut |n| {
        if let Some(b) = &bar {
            b.set_length(b.length().unwrap_or(0).max(n as u64));
            b.set_position(n as u64);
        }
    });
    let rows = parsed.rows.len();
    if !parsed.invalid.is_empty() {
        if let Some(b) = &bar {
            b.finish_and_clear();
        }
        for e in &parsed.invalid {
            eprintln_err(&format!("{shown}:{}: {}: {}", e.line, e.field, e.message));
        }
        println_out(&format!(
            "{} invalid row(s) of {}; nothing imported",
            parsed.invalid.len(),
            rows + parsed.invalid.len()
        ));
        return Ok(1);
    }
    if let Some(b) = &bar {
        b.set_length(rows as u64);
        b.set_position(rows as u64);
        b.set_message(if dry_run { "comparing" } else { "importing" });
        b.enable_steady_tick(Duration::from_millis(200));
    }
    let (url, token) = resolve(args)?;
    let mut client = Client::with(&url, token)?;
    // A large import is one transaction on the server: give it time.
    client.http = tollgate_engine::http::client(Duration::from_secs(600))?;
    let name = if format == ImportFormat::Csv { "csv" } else { "yaml" };
    let body = json!({ "format": name, "content": content, "dry_run": dry_run });
    let (status, v) = client.call_raw(reqwest::Method::POST, "/v1/credentials/import", Some(body)).await?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    if status == 422 && v["error"]["code"] == "invalid_rows" {
        if args.json {
            println_out(&v.to_string());
        }
        for e in v["report"]["errors"].as_array().into_iter().flatten() {
            eprintln_err(&format!("{shown}:{}: {}: {}", s(&e["line"]), s(&e["field"]), s(&e["message"])));
        }
        if !args.json {
            println_out(&format!("{} invalid row(s) of {rows}; nothing imported", s(&v["report"]["invalid"])));
        }
        return Ok(1);
    }
    if !(200..300).contains(&status) {
        let code = v["error"]["code"].as_str().unwrap_or("error");
        let detail = v["error"]["detail"].as_str().unwrap_or("");
        anyhow::bail!("{status} {code}: {detail}");
    }
    if args.json {
        println_out(&v.to_string());
    } else {
        import_lines(&v).iter().for_each(|l| println_out(l));
    }
    Ok(0)
}

/// The human view of an import report: a summary, then one line per created or updated row.
fn import_lines(v: &Value) -> Vec<String> {
    let verb = if v["applied"].as_bool() == Some(true) { "imported" } else { "dry run (nothing stored)" };
    let mut lines = vec![format!(
        "{verb}: {} created, {} updated, {} unchanged, {} invalid",
        s(&v["created"]),
        s(&v["updated"]),
        s(&v["unchanged"]),
        s(&v["invalid"])
    )];
    for r in v["rows"].as_array().into_iter().flatten() {
        lines.push(format!(
            "{:<9} line {:<6} {} (v{})",
            s(&r["outcome"]),
            s(&r["line"]),
            s(&r["name"]),
            s(&r["version"])
        ));
    }
    lines
}

/// `tollgate reload`: `POST /v1/admin/reload`, then what it applied: a summary line, and one line
/// per workflow version loaded and per directory entry added, changed or removed.
///
/// # Errors
/// The server's refusal (403 for a non-admin, 422 `invalid_config` listing every problem) or a
/// connection failure.
pub async fn reload(client: &ClientArgs) -> anyhow::Result<i32> {
    let v = Client::new(client)?.post("/v1/admin/reload", None).await?;
    if client.json {
        println_out(&v.to_string());
    } else {
        reload_lines(&v).iter().for_each(|l| println_out(l));
    }
    Ok(0)
}

/// The human view of what a reload applied.
fn reload_lines(v: &Value) -> Vec<String> {
    let workflows = v["workflows"].as_array().cloned().unwrap_or_default();
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    let mut lines =
        vec![format!("reloaded: {} workflow version(s), {} directory change(s)", workflows.len(), changes.len())];
    for w in &workflows {
        lines.push(format!("{:<8}  workflow {} v{}", "loaded", s(&w["key"]), s(&w["version"])));
    }
    for c in &changes {
        lines.push(format!("{:<8}  {} {}", s(&c["change"]), s(&c["kind"]), s(&c["name"])));
    }
    lines
}

/// Where `tollgate login` reads the token from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `--token`.
    Flag(String),
    /// `--token-stdin`: the first line of standard input.
    Stdin,
    /// Neither: `TOLLGATE_TOKEN`.
    Env,
}

/// `tollgate login`: checks the token with `GET /v1/me`, then stores URL and token in the
/// credentials file. Nothing is written when the server refuses the token.
///
/// # Errors
/// No token, a refused token, an unreachable server, or a file that cannot be written.
pub async fn login(url: &str, source: TokenSource, as_json: bool) -> anyhow::Result<i32> {
    let token = match source {
        TokenSource::Flag(t) => t,
        TokenSource::Stdin => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the token from standard input")?;
            line
        }
        TokenSource::Env => std::env::var("TOLLGATE_TOKEN").unwrap_or_default(),
    };
    let token = token.trim().to_owned();
    anyhow::ensure!(!token.is_empty(), "no token: pass --token-stdin (and the token on standard input) or --token");
    anyhow::ensure!(
        !token.chars().any(|c| c.is_control() || c.is_whitespace()),
        "the token holds spaces or control characters"
    );
    let url = url.trim().trim_end_matches('/').to_owned();
    let parsed = reqwest::Url::parse(&url).with_context(|| format!("--url {url:?} is not a URL"))?;
    anyhow::ensure!(matches!(parsed.scheme(), "http" | "https"), "--url {url:?}: use http:// or https://");
    anyhow::ensure!(!url.chars().any(char::is_control), "--url holds control characters");
    let path = credentials_path()
        .context("nowhere to store the credentials: set TOLLGATE_CREDENTIALS, XDG_CONFIG_HOME or HOME")?;
    let me = Client::with(&url, token.clone())?
        .get("/v1/me")
        .await
        .with_context(|| format!("{url} did not accept the token; nothing was written"))?;
    let principal = me["id"].as_str().map(str::to_owned);
    write_credentials(&path, &Credentials { url: url.clone(), token, principal: principal.clone() })?;
    if as_json {
        println_out(&json!({ "url": url, "principal": me, "credentials": path.display().to_string() }).to_string());
    } else {
        println_out(&format!("logged in to {url} as {} ({})", s(&me["id"]), s(&me["name"])));
        eprintln_err(&format!("credentials saved to {}", path.display()));
    }
    Ok(0)
}

/// `tollgate logout`: removes the credentials file.
///
/// # Errors
/// A file that exists but cannot be removed.
pub fn logout(as_json: bool) -> anyhow::Result<i32> {
    let path = credentials_path()
        .context("no credentials file: none of TOLLGATE_CREDENTIALS, XDG_CONFIG_HOME, HOME is set")?;
    let removed = match std::fs::remove_file(&path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    };
    if as_json {
        println_out(&json!({ "credentials": path.display().to_string(), "removed": removed }).to_string());
    } else if removed {
        println_out(&format!("logged out (removed {})", path.display()));
    } else {
        println_out(&format!("not logged in (no {})", path.display()));
    }
    Ok(0)
}

// ---- output -------------------------------------------------------------------------------

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| if v.is_null() { "-".to_owned() } else { v.to_string() }, str::to_owned)
}

/// A timestamp to the minute, for tables (`-` when absent; as sent when it does not parse).
fn minute(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(|| s(v), |t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M").to_string())
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

fn print_grant(v: &Value, as_json: bool) {
    if as_json {
        println_out(&v.to_string());
        return;
    }
    println_out(&format!("grant       {}", s(&v["id"])));
    println_out(&format!("status      {}", s(&v["status"])));
    println_out(&format!("holder      {}", s(&v["principal"])));
    println_out(&format!("integration {} [{}]", s(&v["integration"]), join(&v["scopes"])));
    println_out(&format!("request     {}", s(&v["request"])));
    println_out(&format!("granted     {}", s(&v["granted_at"])));
    println_out(&format!("expires     {}", s(&v["expires_at"])));
    if !v["revoked_at"].is_null() {
        println_out(&format!("revoked     {}", s(&v["revoked_at"])));
    }
    if !v["reference"].is_null() {
        println_out(&format!("reference   {}", s(&v["reference"])));
    }
}

fn print_request(v: &Value, as_json: bool) {
    if as_json {
        println_out(&v.to_string());
        return;
    }
    request_lines(v).iter().for_each(|l| println_out(l));
}

/// The human view of a request, line by line.
fn request_lines(v: &Value) -> Vec<String> {
    let mut lines = vec![
        format!("request     {}", s(&v["id"])),
        format!("status      {}", s(&v["status"])),
        format!("kind        {}", s(&v["kind"])),
        format!("requester   {}", s(&v["requester"])),
        format!("integration {} [{}] for {}", s(&v["integration"]), join(&v["scopes"]), s(&v["duration"])),
        format!("workflow    {} v{}", s(&v["workflow"]["key"]), s(&v["workflow"]["version"])),
        format!("why         {}", s(&v["justification"])),
    ];
    for a in v["approvals"].as_array().into_iter().flatten() {
        lines.push(format!(
            "decision    {} by {} at {} ({})",
            s(&a["decision"]),
            s(&a["approver"]),
            s(&a["decided_at"]),
            s(&a["comment"])
        ));
    }
    // Who may still decide the current approval step (servers that say so: `eligible`,
    // `remaining`; older ones leave the fields out).
    for step in v["steps"].as_array().into_iter().flatten() {
        let Some(eligible) = step["eligible"].as_array().filter(|_| step["state"] == "current") else { continue };
        let who = if eligible.is_empty() {
            "nobody eligible".to_owned()
        } else {
            eligible.iter().map(s).collect::<Vec<_>>().join(", ")
        };
        match step["remaining"].as_u64() {
            Some(n) => lines.push(format!("waiting for  {n} more approval(s) from: {who}")),
            None => lines.push(format!("waiting for  approval from: {who}")),
        }
    }
    if let Some(g) = v["grant"].as_object() {
        lines.push(format!("grant       {} {} until {}", s(&g["id"]), s(&g["status"]), s(&g["expires_at"])));
    }
    if !v["reason"].is_null() {
        lines.push(format!("reason      {}", s(&v["reason"])));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_approval_step_names_who_may_still_decide() {
        let mut v = json!({
            "id": "r1", "status": "awaiting_approval",
            "steps": [
                { "index": 0, "type": "approval", "state": "done", "eligible": ["zed"], "remaining": 0 },
                { "index": 1, "type": "approval", "state": "current", "eligible": ["bob", "carol"], "remaining": 2 },
                { "index": 2, "type": "action", "state": "pending", "eligible": null, "remaining": null }
            ]
        });
        let waiting: Vec<String> = request_lines(&v).into_iter().filter(|l| l.starts_with("waiting")).collect();
        assert_eq!(waiting, ["waiting for  2 more approval(s) from: bob, carol"]);

        // Without `remaining`, and with nobody left who may decide.
        v["steps"][1]["remaining"] = Value::Null;
        v["steps"][1]["eligible"] = json!([]);
        let waiting: Vec<String> = request_lines(&v).into_iter().filter(|l| l.starts_with("waiting")).collect();
        assert_eq!(waiting, ["waiting for  approval from: nobody eligible"]);
    }

    #[test]
    fn a_server_without_eligible_shows_no_waiting_line() {
        let v = json!({
            "id": "r1", "status": "awaiting_approval",
            "steps": [{ "index": 0, "type": "approval", "state": "current", "deadline": null, "quorum": 1 }]
        });
        let lines = request_lines(&v);
        assert!(lines.iter().all(|l| !l.starts_with("waiting")), "{lines:?}");
        assert_eq!(lines[0], "request     r1");
        let v = json!({ "id": "r2" });
        assert!(request_lines(&v).iter().all(|l| !l.starts_with("waiting")));
    }

    #[test]
    fn a_reload_prints_a_summary_then_one_line_per_change() {
        let v = json!({
            "workflows": [{ "key": "test-grant", "version": 2 }],
            "changes": [
                { "kind": "principal", "name": "frank", "change": "added" },
                { "kind": "group", "name": "security", "change": "changed" }
            ]
        });
        assert_eq!(
            reload_lines(&v),
            [
                "reloaded: 1 workflow version(s), 2 directory change(s)",
                "loaded    workflow test-grant v2",
                "added     principal frank",
                "changed   group security",
            ]
        );
        let nothing = json!({ "workflows": [], "changes": [] });
        assert_eq!(reload_lines(&nothing), ["reloaded: 0 workflow version(s), 0 directory change(s)"]);
    }

    #[test]
    fn credentials_round_trip_and_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("credentials.toml");
        let creds = Credentials {
            url: "http://127.0.0.1:8080".to_owned(),
            token: "tg_\"quoted\\token".to_owned(),
            principal: Some("alice".to_owned()),
        };
        write_credentials(&path, &creds).unwrap();
        let read = read_credentials(&path).unwrap().unwrap();
        assert_eq!((read.url.as_str(), read.token.as_str()), (creds.url.as_str(), creds.token.as_str()));
        assert_eq!(read.principal.as_deref(), Some("alice"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        assert!(read_credentials(&dir.path().join("none.toml")).unwrap().is_none());
        std::fs::write(dir.path().join("bad.toml"), "url = 1").unwrap();
        assert!(read_credentials(&dir.path().join("bad.toml")).is_err());
    }

    #[test]
    fn urls_name_the_same_server_up_to_a_trailing_slash() {
        assert!(same_server("http://127.0.0.1:8080", "http://127.0.0.1:8080/"));
        assert!(same_server("http://LOCALHOST:8080", "http://localhost:8080"));
        assert!(same_server("https://t.example.com:443/", "https://t.example.com"));
        assert!(!same_server("http://127.0.0.1:8080", "http://127.0.0.1:8081"));
        assert!(!same_server("http://a.example.com", "https://a.example.com"));
    }

    #[test]
    fn tables_show_times_to_the_minute() {
        assert_eq!(minute(&json!("2026-01-15T09:31:42.123456Z")), "2026-01-15 09:31");
        assert_eq!(minute(&json!("2026-01-15T10:31:42+01:00")), "2026-01-15 09:31");
        assert_eq!(minute(&Value::Null), "-");
        assert_eq!(minute(&json!("soon")), "soon");
    }

    #[test]
    fn queries_carry_only_the_parameters_set() {
        assert_eq!(with_query("/v1/tasks", &[("status", None), ("limit", None)]), "/v1/tasks");
        assert_eq!(
            with_query("/v1/grants", &[("status", Some("active".into())), ("principal", Some("a b".into()))]),
            "/v1/grants?status=active&principal=a%20b"
        );
    }
}
