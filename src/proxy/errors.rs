//! What a client is answered when proxying fails, and the metric it is counted in. nginx's rules: an
//! upstream that does not answer in time is a 504, one that cannot be reached or breaks the exchange
//! a 502 (a connect timeout included, as the configuration's `connect_timeout_ms` promises).

use crate::metrics;
use pingora_error::{Error, ErrorSource, ErrorType};

/// The status to answer for `e`; 0 when no answer is possible (the client is gone, or the response
/// had started: the connection is then closed mid-response).
pub fn status_for(e: &Error, response_started: bool) -> u16 {
    let code = match (e.etype(), e.esource()) {
        (ErrorType::HTTPStatus(code), _) => *code,
        (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed,
            ErrorSource::Downstream,
        ) => 0,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => 500,
    };
    if response_started {
        0
    } else {
        code
    }
}

/// Count an upstream failure by reason and the status answered.
pub fn count(e: &Error, status: u16) {
    if e.esource() != &ErrorSource::Upstream && !matches!(e.etype(), ErrorType::HTTPStatus(502)) {
        return;
    }
    let status = match status {
        0 => "0",
        502 => "502",
        504 => "504",
        _ => "other",
    };
    metrics::UPSTREAM_ERRORS
        .with_label_values(&[reason(e), status])
        .inc();
}

/// The failure's kind, as counted and logged: Pingora's error type, or `NoBackend` for our own "no
/// reachable upstream" (every backend down or tried).
pub fn reason(e: &Error) -> &str {
    match e.etype() {
        ErrorType::HTTPStatus(_) => "NoBackend",
        t => t.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(t: ErrorType, s: ErrorSource) -> Box<Error> {
        Error::create(t, s, None, None)
    }

    #[test]
    fn timeouts_are_504_and_the_rest_502() {
        use ErrorSource::*;
        use ErrorType::*;
        assert_eq!(status_for(&err(ReadTimedout, Upstream), false), 504);
        assert_eq!(status_for(&err(WriteTimedout, Upstream), false), 504);
        for t in [
            ConnectTimedout,
            ConnectRefused,
            ReadError,
            ConnectionClosed,
            H1Error,
        ] {
            assert_eq!(status_for(&err(t.clone(), Upstream), false), 502, "{t:?}");
        }
        assert_eq!(status_for(&err(ReadTimedout, Upstream), true), 0);
        assert_eq!(status_for(&err(ReadError, Downstream), false), 0);
        assert_eq!(status_for(&err(InvalidHTTPHeader, Downstream), false), 400);
        assert_eq!(status_for(&err(HTTPStatus(502), Unset), false), 502);
        assert_eq!(status_for(&err(InternalError, Internal), false), 500);
    }
}
