//! `roistat-leads send`: sends a webhook shaped as Roistat sends them, with the token
//! computed from login and password, so a set-up can be checked before Roistat is
//! pointed at it.

use std::process::ExitCode;

use clap::{Args, ValueEnum};
use time::OffsetDateTime;
use time::macros::format_description;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SendAction {
    /// A new lead (`action=lead`).
    Lead,
    /// Additional information on a deal (`action=message`).
    Message,
}

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The webhook URL, e.g. http://127.0.0.1:8080/webhook or
    /// https://leads.example.com/webhook.
    #[arg(long)]
    pub url: String,

    /// For an https:// URL: trust the certificate this CA issued (PEM), besides the
    /// system's roots.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The integration login (sent as `user`).
    #[arg(long, env = "ROISTAT_USER", default_value = "")]
    pub roistat_user: String,

    /// The integration password: the token sent is md5(login + password).
    #[arg(
        long,
        env = "ROISTAT_PASSWORD",
        hide_env_values = true,
        conflicts_with = "roistat_token"
    )]
    pub roistat_password: Option<String>,

    /// The token itself, instead of the password.
    #[arg(long, env = "ROISTAT_TOKEN", hide_env_values = true)]
    pub roistat_token: Option<String>,

    /// What to send.
    #[arg(long, value_enum, default_value = "lead")]
    pub action: SendAction,

    /// The lead id (`id`, or `leadId` for a message); default: the current time in
    /// milliseconds, so each send is a new lead.
    #[arg(long)]
    pub id: Option<String>,

    /// The visit number.
    #[arg(long, default_value = "12852")]
    pub visit: String,

    /// The title; default: "Caught lead: 79990001122" (a lead) or "Duplicated lead" (a message).
    #[arg(long)]
    pub title: Option<String>,

    /// The comment or message text.
    #[arg(
        long,
        default_value = "Data of the form: 79990001122\nLanding page: https://example.com/"
    )]
    pub text: String,

    #[arg(long, default_value = "Robert")]
    pub name: String,

    #[arg(long, default_value = "+79990001122")]
    pub phone: String,

    #[arg(long, default_value = "robert@example.com")]
    pub email: String,

    /// The `data` JSON: the landing page and additional form fields.
    #[arg(long, default_value = r#"{"page":"https://example.com/"}"#)]
    pub data: String,
}

impl SendArgs {
    fn token(&self) -> Result<String, String> {
        match (&self.roistat_password, &self.roistat_token) {
            (_, Some(token)) => Ok(token.trim().to_ascii_lowercase()),
            (Some(password), None) => Ok(crate::own_crm::token(&self.roistat_user, password)),
            (None, None) => Err(
                "give --roistat-password or --roistat-token (or ROISTAT_PASSWORD, ROISTAT_TOKEN)"
                    .to_owned(),
            ),
        }
    }

    /// The query string's parameters, as Roistat would send them.
    fn query(&self, token: &str) -> Result<Vec<(&'static str, String)>, String> {
        serde_json::from_str::<serde_json::Value>(&self.data)
            .map_err(|error| format!("--data is not JSON: {error}"))?;
        let id = self.id.clone().unwrap_or_else(|| {
            (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).to_string()
        });
        let mut query = vec![
            ("user", self.roistat_user.clone()),
            ("token", token.to_owned()),
        ];
        match self.action {
            SendAction::Lead => {
                let created = OffsetDateTime::now_utc()
                    .format(format_description!(
                        "[year]-[month]-[day] [hour]:[minute]:[second]"
                    ))
                    .unwrap_or_default();
                query.extend([
                    ("action", "lead".to_owned()),
                    ("id", id),
                    ("visit", self.visit.clone()),
                    (
                        "title",
                        self.title
                            .clone()
                            .unwrap_or_else(|| "Caught lead: 79990001122".to_owned()),
                    ),
                    ("text", self.text.clone()),
                    ("name", self.name.clone()),
                    ("phone", self.phone.clone()),
                    ("email", self.email.clone()),
                    ("data", self.data.clone()),
                    ("created_date", created),
                ]);
            }
            SendAction::Message => query.extend([
                ("action", "message".to_owned()),
                ("leadId", id),
                (
                    "title",
                    self.title
                        .clone()
                        .unwrap_or_else(|| "Duplicated lead".to_owned()),
                ),
                ("text", self.text.clone()),
            ]),
        }
        Ok(query)
    }
}

/// Sends the webhook, prints the answer; success only for `{"status":"ok",...}`.
pub async fn run(args: SendArgs) -> ExitCode {
    match send(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("roistat-leads send: {error}");
            ExitCode::from(2)
        }
    }
}

async fn send(args: &SendArgs) -> Result<bool, String> {
    let query = args.query(&args.token()?)?;
    let mut client = reqwest::Client::builder();
    if let Some(path) = &args.tls_ca {
        let pem = std::fs::read(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        client = client.add_root_certificate(certificate);
    }
    let client = client
        .build()
        .map_err(|error| format!("cannot set up the HTTP client: {error}"))?;
    let response = client
        .get(&args.url)
        .query(&query)
        .send()
        .await
        // Without the URL: its query carries the token.
        .map_err(|error| {
            format!(
                "cannot reach {}: {}",
                args.url,
                super::causes(&error.without_url())
            )
        })?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|error| format!("cannot read the answer: {error}"))?;
    println!("{} {}", status.as_u16(), body.trim_end());
    let ok = status.is_success()
        && serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|answer| answer["status"] == "ok");
    Ok(ok)
}
