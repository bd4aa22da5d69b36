//! gRPC calls as metrics: requests by method and status code, and the latency of
//! unary calls. Methods are known from start-up (the service's descriptors), so
//! each series exists before the first call; a path no service has counts as
//! `other`.

use std::sync::OnceLock;
use std::time::Duration;

pub const GRPC_REQUESTS: &str = "roistat_leads_grpc_requests_total";
pub const GRPC_SECONDS: &str = "roistat_leads_grpc_request_seconds";

/// A method, as calls to it are labelled.
#[derive(Debug, Clone, Copy)]
pub struct GrpcMethod {
    /// `/package.Service/Method`, or `other`.
    pub path: &'static str,
    /// Whether the server streams its answer (no latency is kept).
    pub streaming: bool,
}

static METHODS: OnceLock<Vec<GrpcMethod>> = OnceLock::new();

/// The status codes' names, by number.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Registers the methods and their series (every method's OK count, every unary
/// method's latency).
pub(super) fn install(methods: &[GrpcMethod]) {
    metrics::describe_counter!(
        GRPC_REQUESTS,
        metrics::Unit::Count,
        "gRPC calls ended, by method and status code (a stream counts when it ends)."
    );
    metrics::describe_histogram!(
        GRPC_SECONDS,
        metrics::Unit::Seconds,
        "Seconds a unary gRPC call took, from its request to its status, by method (streams are left out)."
    );
    let _ = METHODS.set(methods.to_vec());
    for method in methods {
        metrics::counter!(GRPC_REQUESTS, "method" => method.path, "code" => "OK").absolute(0);
        if !method.streaming {
            let _ = metrics::histogram!(GRPC_SECONDS, "method" => method.path);
        }
    }
}

/// The method a request path names.
pub fn grpc_method(path: &str) -> GrpcMethod {
    METHODS
        .get()
        .and_then(|methods| methods.iter().find(|method| method.path == path))
        .copied()
        .unwrap_or(GrpcMethod {
            path: "other",
            streaming: true,
        })
}

/// A call of `method` ended with status `code` after `elapsed`.
pub fn grpc_answered(method: &GrpcMethod, code: i32, elapsed: Duration) {
    let code = usize::try_from(code)
        .ok()
        .and_then(|code| CODES.get(code))
        .copied()
        .unwrap_or("UNKNOWN");
    metrics::counter!(GRPC_REQUESTS, "method" => method.path, "code" => code).increment(1);
    if !method.streaming {
        metrics::histogram!(GRPC_SECONDS, "method" => method.path).record(elapsed.as_secs_f64());
    }
}
