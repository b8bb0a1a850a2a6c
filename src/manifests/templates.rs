//! The template engine (minijinja) over `embedded/`, set up the same way for every file:
//! strict about undefined values, with a `json` filter that quotes any value as a YAML-safe
//! JSON scalar (so a config string can never break the YAML around it).

use anyhow::{Context, Result};
use minijinja::{Environment, UndefinedBehavior, Value};

/// An environment that loads templates from `embedded/` by path.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(|name| Ok(crate::embedded::text(name).ok()));
    env.add_filter("json", |value: Value| -> Result<String, minijinja::Error> {
        serde_json::to_string(&value).map_err(|e| {
            minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string())
        })
    });
    env
}

/// Renders the embedded template at `path`; the text always ends with one newline.
pub fn render(env: &Environment<'_>, path: &str, context: Value) -> Result<String> {
    let template = env
        .get_template(path)
        .with_context(|| format!("loading embedded template {path}"))?;
    let mut text = template
        .render(context)
        .with_context(|| format!("rendering embedded template {path}"))?;
    while text.ends_with('\n') {
        text.pop();
    }
    text.push('\n');
    Ok(text)
}
