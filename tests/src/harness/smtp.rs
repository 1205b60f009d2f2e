//! A real SMTP server on loopback (mailin-embedded, plain SMTP) that keeps what it receives.
//! It answers `RCPT TO` with 550 for addresses starting with `bounce` (a permanent rejection).

use std::net::TcpListener;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use mail_parser::MessageParser;
use mailin_embedded::response::{NO_MAILBOX, OK};
use mailin_embedded::{Handler, Response, Server};

/// One message as the server received it, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Envelope recipients.
    pub to: Vec<String>,
    /// `Subject`.
    pub subject: String,
    /// The `text/plain` body.
    pub text: String,
    /// The `text/html` body.
    pub html: String,
    /// The whole message as received.
    pub raw: String,
    /// When the server accepted it.
    pub accepted_at: Instant,
}

impl Mail {
    /// The approval link in the plain-text body, if any.
    #[must_use]
    pub fn approval_link(&self) -> Option<String> {
        self.text.split_whitespace().find(|w| w.contains("/approvals/email/")).map(str::to_owned)
    }

    /// Whether `address` is among the envelope recipients.
    #[must_use]
    pub fn is_for(&self, address: &str) -> bool {
        self.to.iter().any(|t| t == address)
    }
}

#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Vec<Mail>>>,
    to: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Sink {
    fn rcpt(&mut self, to: &str) -> Response {
        if to.starts_with("bounce") { NO_MAILBOX } else { OK }
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.to = to.to_vec();
        self.data.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let accepted_at = Instant::now();
        let raw = String::from_utf8_lossy(&self.data).into_owned();
        let parsed = MessageParser::default().parse(&self.data);
        let mail = Mail {
            to: std::mem::take(&mut self.to),
            subject: parsed.as_ref().and_then(|m| m.subject()).unwrap_or_default().to_owned(),
            text: parsed.as_ref().and_then(|m| m.body_text(0)).unwrap_or_default().into_owned(),
            html: parsed.as_ref().and_then(|m| m.body_html(0)).unwrap_or_default().into_owned(),
            raw,
            accepted_at,
        };
        self.received.lock().unwrap_or_else(PoisonError::into_inner).push(mail);
        OK
    }
}

/// The SMTP server. It runs on a thread for the rest of the process.
#[derive(Clone)]
pub struct SmtpServer {
    port: u16,
    received: Arc<Mutex<Vec<Mail>>>,
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer").field("port", &self.port).finish_non_exhaustive()
    }
}

impl SmtpServer {
    /// Starts on a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(0)
    }

    /// A port nothing listens on now (for "server down, then up" tests: start on it later).
    ///
    /// # Errors
    /// When no port can be bound.
    pub fn free_port() -> anyhow::Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// Starts on `port` (0: any).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub fn start_on(port: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let sink = Sink::default();
        let received = sink.received.clone();
        let mut server = Server::new(sink);
        server.with_name("smtp.test").with_num_threads(64).with_tcp_listener(listener);
        std::thread::spawn(move || server.serve().map_err(|e| e.to_string()));
        Ok(Self { port, received })
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `[email]` configuration sending through this server (TOML).
    #[must_use]
    pub fn config(port: u16) -> String {
        format!(
            "\n[email]\nfrom = \"Tollgate <tollgate@example.com>\"\n\n[email.smtp]\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\ntimeout = \"2s\"\n"
        )
    }

    /// Everything received so far.
    #[must_use]
    pub fn messages(&self) -> Vec<Mail> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Waits until `done` holds for the messages received.
    ///
    /// # Errors
    /// After `timeout`, listing the subjects and recipients received.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Mail]) -> bool,
    ) -> anyhow::Result<Vec<Mail>> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if done(&messages) {
                return Ok(messages);
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = messages.iter().map(|m| format!("{:?} → {:?}", m.subject, m.to)).collect();
                bail!("timed out waiting for {what}; received: {seen:#?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
