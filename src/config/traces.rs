//! The trace exporter's settings: `--otlp-endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT)
//! and `--otlp-sampling-ratio`, from a flag or the environment, else the file.

use super::ConfigError;
use super::file::FileConfig;
use crate::cli::ServeArgs;
use crate::telemetry::TraceSettings;

pub(super) fn traces(
    args: &ServeArgs,
    file: &FileConfig,
    explicit: &dyn Fn(&str) -> bool,
) -> Result<TraceSettings, ConfigError> {
    let endpoint = if explicit("otlp_endpoint") {
        args.otlp_endpoint.clone()
    } else {
        file.otlp_endpoint.clone().or(args.otlp_endpoint.clone())
    };
    let endpoint = endpoint
        .map(|endpoint| endpoint.trim().to_owned())
        .filter(|endpoint| !endpoint.is_empty());
    if let Some(endpoint) = &endpoint {
        let uri: Option<http::Uri> = endpoint.parse().ok();
        let usable = uri.is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !usable {
            return Err(ConfigError::Invalid {
                key: "otlp_endpoint",
                reason: format!(
                    "{endpoint:?} is not an http:// or https:// URL of an OTLP/gRPC collector \
                     (e.g. http://otel-collector:4317)"
                ),
            });
        }
    }
    let sampling_ratio = if explicit("otlp_sampling_ratio") {
        args.otlp_sampling_ratio
    } else {
        file.otlp_sampling_ratio.unwrap_or(args.otlp_sampling_ratio)
    };
    if !(0.0..=1.0).contains(&sampling_ratio) {
        return Err(ConfigError::Invalid {
            key: "otlp_sampling_ratio",
            reason: format!("{sampling_ratio} is not between 0.0 and 1.0"),
        });
    }
    Ok(TraceSettings {
        endpoint,
        sampling_ratio,
    })
}
