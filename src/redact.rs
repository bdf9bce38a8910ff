//! What goes into logs instead of secrets: URLs (database, webhooks) with
//! their passwords masked. Configuration is logged at start-up through
//! this, never as given.

/// A URL with any password replaced by `****`, for logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:****@h:5432/db"
        );
        assert_eq!(redact_url("sqlite://x/index.db"), "sqlite://x/index.db");
    }
}
