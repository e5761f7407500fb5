//! The gateway's Kong declarative loader (`gateway::config::load_str`, YAML or JSON) on
//! arbitrary text: it answers a configuration or errors with file:line, never a panic.
//! Both load modes run: a file read at start-up (environment references expanded) and a
//! posted configuration (references refused), the latter with `--strict`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for posted in [false, true] {
        let mut opts = gateway::plugins::load_options(vec!["ignored-plugin".into()]);
        opts.refuse_env = posted;
        opts.strict = posted;
        match gateway::config::load_str(&text, "fuzz.yml", &opts) {
            Ok(decl) => {
                // Every loaded route and service is reachable by index, as the runtime
                // build assumes.
                for r in &decl.routes {
                    if let Some(s) = r.service {
                        assert!(s < decl.services.len(), "route points past the services");
                    }
                }
                for w in &decl.warnings {
                    assert!(!w.message.is_empty());
                }
            }
            // Rendering the errors (file:line, redaction) must not panic either.
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
