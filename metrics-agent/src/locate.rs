//! Maps a field path (`scrape_configs[1].tls_config.ca_file`) to the line where it is
//! written, so warnings and errors name `file:line`: the workspace's `yaml-locate`, shared
//! with the gateway.

pub use yaml_locate::LineIndex;
