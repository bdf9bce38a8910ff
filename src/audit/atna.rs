//! The audit trail to an ATNA audit record repository (IHE ITI-20): each
//! event as a DICOM audit message (PS3.15 A.5.1) in an RFC 5424 syslog
//! message (MSGID `IHE+RFC-3881`), sent over TCP or TLS with RFC 5425
//! octet-counting framing (`LEN SP MSG`). `--audit-syslog tcp://host:port`
//! or `tls://host:port` (`--audit-syslog-ca` to trust a private CA).
//!
//! The index's audit table is the record; this is a copy, best effort:
//! the connection is made again after a failure, and events that cannot
//! be sent within a bounded queue are counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Event, EventId};

/// Where the messages go.
#[derive(Debug, Clone)]
pub struct SyslogTarget {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// TLS with these roots (`None`: plain TCP).
    pub(crate) tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl SyslogTarget {
    /// `tcp://host:port` or `tls://host:port`; `ca`: PEM roots for TLS
    /// (default: the system's).
    pub fn parse(url: &str, ca: Option<&std::path::Path>) -> Result<SyslogTarget, String> {
        let u = url::Url::parse(url).map_err(|e| format!("--audit-syslog '{url}': {e}"))?;
        let host = u
            .host_str()
            .ok_or_else(|| format!("--audit-syslog '{url}': no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tls = match u.scheme() {
            "tcp" => None,
            "tls" => Some(crate::tls::client_config(ca)?),
            other => {
                return Err(format!(
                    "--audit-syslog '{url}': scheme {other}: use tcp:// or tls://"
                ))
            }
        };
        // RFC 5425 §4.1: 6514 is syslog over TLS's port.
        let port = u.port().unwrap_or(if tls.is_some() { 6514 } else { 601 });
        Ok(SyslogTarget { host, port, tls })
    }
}

/// The sender's handle.
#[derive(Debug, Clone)]
pub(crate) struct Atna {
    tx: mpsc::Sender<Event>,
    pub(crate) lost: Arc<AtomicU64>,
}

impl Atna {
    pub(crate) fn send(&self, e: &Event) {
        if self.tx.try_send(e.clone()).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) fn start(
    target: SyslogTarget,
    shutdown: CancellationToken,
) -> (Atna, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(super::QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(run(target, rx, lost.clone(), shutdown));
    (Atna { tx, lost }, task)
}

trait Stream: tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(t: &SyslogTarget) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    match &t.tls {
        None => Ok(Box::new(tcp)),
        Some(config) => {
            let name = rustls_pki_types::ServerName::try_from(t.host.clone())
                .map_err(|e| format!("{}: {e}", t.host))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Ok(Box::new(tls))
        }
    }
}

async fn run(
    target: SyslogTarget,
    mut rx: mpsc::Receiver<Event>,
    lost: Arc<AtomicU64>,
    shutdown: CancellationToken,
) {
    let mut conn: Option<Box<dyn Stream>> = None;
    let mut backoff = Duration::from_millis(200);
    let host = hostname();
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => break },
            _ = shutdown.cancelled() => match rx.try_recv() { Ok(e) => e, Err(_) => break },
        };
        let frame = frame(&syslog_message(&event, &host));
        // Two attempts per event (a new connection for the second); then
        // the event is counted as lost.
        let mut sent = false;
        for _ in 0..2 {
            if conn.is_none() {
                match connect(&target).await {
                    Ok(c) => {
                        conn = Some(c);
                        backoff = Duration::from_millis(200);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, host = %target.host, port = target.port, "audit repository unreachable");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let written = tokio::time::timeout(Duration::from_secs(10), async {
                c.write_all(&frame).await?;
                c.flush().await
            })
            .await;
            if matches!(written, Ok(Ok(()))) {
                sent = true;
                break;
            }
            conn = None;
        }
        if !sent {
            lost.fetch_add(1, Ordering::Relaxed);
        }
    }
    if let Some(mut c) = conn {
        let _ = c.shutdown().await;
    }
    let n = lost.load(Ordering::Relaxed);
    if n > 0 {
        tracing::warn!(
            lost = n,
            "audit messages not delivered to the audit repository"
        );
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "-".into())
}

/// RFC 5425 §4.3: octet counting.
pub(crate) fn frame(msg: &str) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg.as_bytes());
    out
}

/// An RFC 5424 message: facility 10 (security/authorization), severity
/// notice for successes and warning for failures; the MSG is the audit
/// message as UTF-8 (with its BOM, RFC 5424 §6.4).
pub(crate) fn syslog_message(e: &Event, host: &str) -> String {
    let severity = if e.outcome == super::Outcome::Success {
        5
    } else {
        4
    };
    format!(
        "<{}>1 {} {host} phim {} IHE+RFC-3881 - \u{feff}{}",
        10 * 8 + severity,
        rfc3339(e.time_ms),
        std::process::id(),
        audit_message(e)
    )
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

/// XML attribute text.
fn x(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 => out.push_str(&format!("&#{};", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn code(element: &str, code: &str, system: &str, meaning: &str) -> String {
    format!(
        "<{element} csd-code=\"{}\" codeSystemName=\"{}\" originalText=\"{}\"/>",
        x(code),
        x(system),
        x(meaning)
    )
}

/// PS3.16 CID 401 (Audit Event Type Code) codes of the types Phim uses.
fn event_type_code(t: &str) -> Option<&'static str> {
    Some(match t {
        "Application Start" => "110120",
        "Application Stop" => "110121",
        "Login" => "110122",
        "Logout" => "110123",
        "Unauthorized Access" => "110126",
        "Audit Recording Stopped" => "110138",
        _ => return None,
    })
}

/// The Participant Objects (PS3.15 A.5.2): the patient, each study, and
/// for a query the query itself.
fn participant_objects(m: &mut String, e: &Event) {
    if let Some(p) = &e.patient_id {
        m.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">",
            x(p)
        ));
        m.push_str(&code(
            "ParticipantObjectIDTypeCode",
            "2",
            "RFC-3881",
            "Patient Number",
        ));
        m.push_str("</ParticipantObjectIdentification>");
    }
    for s in &e.studies {
        m.push_str(&format!(
            "<ParticipantObjectIdentification ParticipantObjectID=\"{}\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">",
            x(s)
        ));
        m.push_str(&code(
            "ParticipantObjectIDTypeCode",
            "110180",
            "DCM",
            "Study Instance UID",
        ));
        if e.instances > 0 {
            m.push_str(&format!(
                "<ParticipantObjectDescription><SOPClass NumberOfInstances=\"{}\"/></ParticipantObjectDescription>",
                e.instances
            ));
        }
        m.push_str("</ParticipantObjectIdentification>");
    }
    if e.event == EventId::Query && !e.detail.is_empty() {
        use base64::Engine;
        m.push_str("<ParticipantObjectIdentification ParticipantObjectID=\"query\" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"24\">");
        m.push_str(&code(
            "ParticipantObjectIDTypeCode",
            "110181",
            "DCM",
            "SOP Class UID",
        ));
        m.push_str(&format!(
            "<ParticipantObjectQuery>{}</ParticipantObjectQuery>",
            base64::engine::general_purpose::STANDARD.encode(e.detail.as_bytes())
        ));
        m.push_str("</ParticipantObjectIdentification>");
    }
}

/// The DICOM audit message (PS3.15 A.5.1), on one line.
pub(crate) fn audit_message(e: &Event) -> String {
    let mut m = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage>");
    m.push_str(&format!(
        "<EventIdentification EventActionCode=\"{:?}\" EventDateTime=\"{}\" EventOutcomeIndicator=\"{}\">",
        e.action,
        rfc3339(e.time_ms),
        e.outcome as i32
    ));
    m.push_str(&code(
        "EventID",
        &e.event.code().to_string(),
        "DCM",
        e.event.meaning(),
    ));
    if let Some(t) = &e.event_type {
        if let Some(c) = event_type_code(t) {
            m.push_str(&code("EventTypeCode", c, "DCM", t));
        }
    }
    if !e.detail.is_empty() {
        m.push_str(&format!(
            "<EventOutcomeDescription>{}</EventOutcomeDescription>",
            x(&e.detail)
        ));
    }
    m.push_str("</EventIdentification>");
    // The requestor, then Phim.
    let a = &e.actor;
    m.push_str(&format!(
        "<ActiveParticipant UserID=\"{}\" AlternativeUserID=\"{}\" UserIsRequestor=\"true\"",
        x(&a.name),
        x(&a.method)
    ));
    if let Some(addr) = &a.address {
        m.push_str(&format!(
            " NetworkAccessPointID=\"{}\" NetworkAccessPointTypeCode=\"2\"",
            x(addr)
        ));
    }
    m.push('>');
    m.push_str(&code("RoleIDCode", "110153", "DCM", "Source Role ID"));
    m.push_str("</ActiveParticipant>");
    m.push_str("<ActiveParticipant UserID=\"phim\" UserIsRequestor=\"false\">");
    m.push_str(&code("RoleIDCode", "110152", "DCM", "Destination Role ID"));
    m.push_str("</ActiveParticipant>");
    m.push_str("<AuditSourceIdentification AuditSourceID=\"phim\">");
    m.push_str(&code(
        "AuditSourceTypeCode",
        "4",
        "DCM",
        "Application Server Process",
    ));
    m.push_str("</AuditSourceIdentification>");
    participant_objects(&mut m, e);
    m.push_str("</AuditMessage>");
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Action, Actor, Outcome};

    #[test]
    fn messages_are_framed_rfc5424_with_an_audit_message() {
        let e = Event::new(EventId::Query, Action::E, Outcome::Success, Actor::phim())
            .studies(vec!["1.2.3".into()])
            .patient(Some("P<1>".into()))
            .detail("GET /dicomweb/studies?PatientID=P%3C1%3E");
        let msg = syslog_message(&e, "host");
        assert!(msg.starts_with("<85>1 "), "{msg}");
        assert!(msg.contains(" host phim ") && msg.contains(" IHE+RFC-3881 - \u{feff}<?xml"));
        assert!(msg.contains("ParticipantObjectID=\"P&lt;1&gt;\""));
        assert!(!msg.contains('\n'));
        let f = frame(&msg);
        let (len, rest) = f.split_at(f.iter().position(|b| *b == b' ').unwrap());
        assert_eq!(
            std::str::from_utf8(len).unwrap().parse::<usize>().unwrap(),
            rest.len() - 1
        );
        assert!(SyslogTarget::parse("tcp://127.0.0.1:601", None).is_ok());
        assert!(SyslogTarget::parse("udp://127.0.0.1:514", None).is_err());
    }
}
