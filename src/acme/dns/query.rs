//! Plain DNS exchanges over UDP with hickory: the lookups DNS-01 needs (a CNAME at
//! `_acme-challenge.<name>`, the zone of a name, whether a TXT value is visible) and the client the
//! RFC 2136 updates are sent with.

use hickory_net::client::{Client, ClientHandle};
use hickory_net::proto::op::ResponseCode;
use hickory_net::proto::rr::{DNSClass, Name, RData, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one exchange waits for its answer (hickory retries within it).
const TIMEOUT: Duration = Duration::from_secs(5);
/// CNAMEs followed from `_acme-challenge.<name>` before giving up (a loop, or a chain nobody needs).
const MAX_CNAMES: usize = 8;

pub type DnsClient = Client<TokioRuntimeProvider>;

/// A client for one server; requests are TSIG-signed (and answers verified) when `signer` is set.
pub fn client(server: SocketAddr, signer: Option<TSigner>) -> DnsClient {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::new())
        .with_timeout(Some(TIMEOUT))
        .with_signer(signer)
        .build();
    let (client, background) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(background);
    client
}

/// A fully qualified name from text (`a.example` and `a.example.` are the same).
pub fn name(s: &str) -> Result<Name, String> {
    let mut n = Name::from_ascii(s).map_err(|e| format!("`{s}` is not a DNS name: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The text of a name without its final dot.
pub fn text(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_string()
}

/// The zone `fqdn` belongs to, by the SOA the server answers with (in the answer when `fqdn` is the
/// apex, in the authority section otherwise).
pub async fn zone_of(server: SocketAddr, fqdn: &Name) -> Result<Name, String> {
    let mut c = client(server, None);
    let rsp = c
        .query(fqdn.clone(), DNSClass::IN, RecordType::SOA)
        .await
        .map_err(|e| format!("asking {server} for the zone of {}: {e}", text(fqdn)))?;
    match rsp.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        code => {
            return Err(format!(
                "{server} answered {code} when asked for the zone of {}",
                text(fqdn)
            ))
        }
    }
    rsp.answers
        .iter()
        .chain(rsp.authorities.iter())
        .find(|r| r.record_type() == RecordType::SOA && r.name.zone_of(fqdn))
        .map(|r| r.name.clone())
        .ok_or_else(|| {
            format!(
                "{server} is not authoritative for any zone above {}",
                text(fqdn)
            )
        })
}

/// Follow CNAMEs from `fqdn` (the customer delegated `_acme-challenge.<name>` to a zone the platform
/// controls): where the TXT record has to be written. `fqdn` itself when there is no CNAME.
pub async fn follow_cnames(servers: &[SocketAddr], fqdn: &Name) -> Result<Name, String> {
    let mut at = fqdn.clone();
    for _ in 0..MAX_CNAMES {
        match cname_at(servers, &at).await? {
            Some(next) => at = next,
            None => return Ok(at),
        }
    }
    Err(format!(
        "more than {MAX_CNAMES} CNAMEs from {}: a loop?",
        text(fqdn)
    ))
}

/// The CNAME target at `fqdn`, asking the servers in turn until one answers.
async fn cname_at(servers: &[SocketAddr], fqdn: &Name) -> Result<Option<Name>, String> {
    let mut last = String::new();
    for &s in servers {
        let mut c = client(s, None);
        match c.query(fqdn.clone(), DNSClass::IN, RecordType::CNAME).await {
            Ok(rsp) => {
                return Ok(rsp.answers.iter().find_map(|r| match &r.data {
                    RData::CNAME(t) if r.name == *fqdn => Some(t.0.clone()),
                    _ => None,
                }))
            }
            Err(e) => last = format!("asking {s} for a CNAME at {}: {e}", text(fqdn)),
        }
    }
    Err(last)
}

/// Does `server` answer `value` among the TXT records at `fqdn`?
pub async fn has_txt(server: SocketAddr, fqdn: &Name, value: &str) -> Result<bool, String> {
    let mut c = client(server, None);
    let rsp = c
        .query(fqdn.clone(), DNSClass::IN, RecordType::TXT)
        .await
        .map_err(|e| format!("asking {server} for TXT {}: {e}", text(fqdn)))?;
    Ok(rsp.answers.iter().any(|r| match &r.data {
        RData::TXT(t) => t.txt_data.concat() == value.as_bytes(),
        _ => false,
    }))
}
