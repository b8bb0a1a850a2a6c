//! The commented rebox.toml of `rebox init`, from the embedded template; every value is
//! written as a TOML string, so an answer with quotes cannot break the file.

use anyhow::Result;

use super::Config;

impl Config {
    /// The commented rebox.toml that `rebox init` writes, with these values filled in.
    pub fn commented_toml(&self) -> Result<String> {
        let c = self;
        let mut env = minijinja::Environment::new();
        env.add_filter("tomlstr", |s: String| toml::Value::String(s).to_string());
        let template = crate::embedded::text("rebox.toml.j2")?;
        env.add_template("rebox.toml", &template)?;
        let out = env
            .get_template("rebox.toml")?
            .render(minijinja::context! {
                cluster_name => c.cluster_name,
                host => c.server.host,
                user => c.server.user.clone().unwrap_or_else(|| "homelab".into()),
                backup_target => c.nas.backup_target,
                repo_url => c.argocd.repo_url,
                path => c.argocd.path,
            })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn default_template_parses_back_to_the_defaults() {
        let mut c = Config::default();
        c.server.user = Some("homelab".into());
        let text = c.commented_toml().unwrap();
        let parsed = Config::parse(&text, Path::new("t")).unwrap();
        assert_eq!(parsed, c);
    }

    #[test]
    fn answers_with_quotes_are_escaped() {
        let mut c = Config::default();
        c.server.user = Some("homelab".into());
        c.cluster_name = "my \"lab\"".into();
        c.server.host = "10.0.0.5".into();
        let parsed = Config::parse(&c.commented_toml().unwrap(), Path::new("t")).unwrap();
        assert_eq!(parsed, c);
    }
}
