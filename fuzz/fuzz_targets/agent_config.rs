//! The agent's config file: first byte selects YAML (even) or TOML (odd).
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pullprobe::agent::config::{AgentConfig, ConfigFormat};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if sel % 2 == 0 {
        ConfigFormat::Yaml
    } else {
        ConfigFormat::Toml
    };
    match AgentConfig::parse(s, format, Path::new("/etc/pullprobe/config")) {
        Ok(cfg) => {
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let _ = (e.to_string(), e.field());
        }
    }
});
