//! The small HTTP/1.1 layer shared by the control socket (unix) and the telemetry
//! listener (TCP): a sans-I/O server connection (`Conn`) the event loop drives, and a
//! blocking one-shot client for CLI subcommands. No routing lives here.

pub(crate) mod chunked;
mod client;
mod server;

pub use client::{request, request_unix, ClientError, ClientResponse};
pub use server::{BodyBudget, BodyRule, Conn, Gate, Limits, ReadOutcome, Request, Response};

/// Reason phrase for the status codes we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::reason;

    #[test]
    fn reason_phrases() {
        assert_eq!(reason(200), "OK");
        assert_eq!(reason(405), "Method Not Allowed");
        assert_eq!(reason(413), "Payload Too Large");
        assert_eq!(reason(431), "Request Header Fields Too Large");
        assert_eq!(reason(503), "Service Unavailable");
        assert_eq!(reason(299), "Unknown");
    }
}
