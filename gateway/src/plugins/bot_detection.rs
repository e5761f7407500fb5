//! Kong's `bot-detection`: the User-Agent is matched against `allow` (a match lets the
//! request through), then `deny`, then Kong's built-in bot rules (its `rules.lua`, taken
//! from ua-parser); a denied agent or a bot gets Kong's 403 "Forbidden". A request with
//! several User-Agent headers gets 400 "Only one User-Agent header allowed"; one
//! without any passes. Results are cached per User-Agent in a bounded LRU per plugin
//! instance (Kong keeps 10,000 per configuration and worker).
//!
//! Kong matches with PCRE (`ngx.re.find`, no UTF-8 mode); here the `regex` crate
//! matches bytes with Unicode classes off, which is the same for these patterns. A
//! pattern `regex` cannot compile (look-around, back-references) is a configuration
//! error naming the field.

use std::sync::Mutex;

use async_trait::async_trait;
use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use super::lru::Lru;
use super::{BuildContext, BuildError, Flow, Plugin, SpecError};
use crate::core::Session;
use crate::core::respond::LocalResponse;
use crate::core::state::RequestState;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub allow: Vec<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub deny: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl Config {
    pub fn validate(&self) -> Result<(), SpecError> {
        compile_list("allow", &self.allow)?;
        compile_list("deny", &self.deny)?;
        Ok(())
    }
}

/// Kong's built-in bot rules (`kong/plugins/bot-detection/rules.lua`, 3.9.3).
pub const BOT_RULES: &[&str] = &[
    // Pingdom
    r"(Pingdom\.com_bot_version_)(\d+)\.(\d+)",
    // Facebook
    r"(facebookexternalhit)/(\d+)\.(\d+)",
    // Google Plus
    r"Google.*/\+/web/snippet",
    // Twitter
    r"(Twitterbot)/(\d+)\.(\d+)",
    // AWS S3 clients
    r"\b(Boto3?|JetS3t|aws-(?:cli|sdk-(?:cpp|go|java|nodejs|ruby2?|dotnet-(?:\d{1,2}|core)))|s3fs)/(\d+)\.(\d+)(?:\.(\d+)|)",
    // PTST / WebPageTest.org crawlers
    r" PTST/\d+(?:\.)?\d+$",
    // Bots pattern '/name-0.0'
    r"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    // Bots pattern 'name/0.0'
    r"\b(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|OgScrper|PathDefender|Peew|PostPost|Steeler|Twitterbot|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)(?:\.(\d+)|)(?:\.(\d+)|)",
    // MSIECrawler
    r"(MSIE) (\d+)\.(\d+)([a-z]\d|[a-z]|);.* MSIECrawler",
    // Downloaders and HTTP client libraries
    r"(Google-HTTP-Java-Client|Apache-HttpClient|Go-http-client|scalaj-http|http%20client|Python-urllib|HttpMonitor|TLSProber|WinHTTP|JNLP|okhttp|aihttp|reqwest|axios|unirest-(?:java|python|ruby|nodejs|php|net))(?:[ /](\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)",
    // Bots
    r"(CSimpleSpider|Cityreview Robot|CrawlDaddy|CrawlFire|Finderbots|Index crawler|Job Roboter|KiwiStatus Spider|Lijit Crawler|QuerySeekerSpider|ScollSpider|Trends Crawler|USyd-NLP-Spider|SiteCat Webbot|BotName\/\$BotVersion|123metaspider-Bot|1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]{1,30}-Agent|AdsBot-Google(?:-[a-z]{1,30}|)|altavista|AppEngine-Google|archive.{0,30}\.org_bot|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]{1,30})(?:-[A-Za-z]{1,30}|)|bingbot|BingPreview|blitzbot|BlogBridge|Bloglovin|BoardReader Blog Indexer|BoardReader Favicon Fetcher|boitho.com-dc|BotSeer|BUbiNG|\b\w{0,30}favicon\w{0,30}\b|\bYeti(?:-[a-z]{1,30}|)|Catchpoint(?: bot|)|[Cc]harlotte|Checklinks|clumboot|Comodo HTTP\(S\) Crawler|Comodo-Webinspector-Crawler|ConveraCrawler|CRAWL-E|CrawlConvera|Daumoa(?:-feedfetcher|)|Feed Seeker Bot|Feedbin|findlinks|Flamingo_SearchEngine|FollowSite Bot|furlbot|Genieo|gigabot|GomezAgent|gonzo1|(?:[a-zA-Z]{1,30}-|)Googlebot(?:-[a-zA-Z]{1,30}|)|Google SketchUp|grub-client|gsa-crawler|heritrix|HiddenMarket|holmes|HooWWWer|htdig|ia_archiver|ICC-Crawler|Icarus6j|ichiro(?:/mobile|)|IconSurf|IlTrovatore(?:-Setaccio|)|InfuzApp|Innovazion Crawler|InternetArchive|IP2[a-z]{1,30}Bot|jbot\b|KaloogaBot|Kraken|Kurzor|larbin|LEIA|LesnikBot|Linguee Bot|LinkAider|LinkedInBot|Lite Bot|Llaut|lycos|Mail\.RU_Bot|masscan|masidani_bot|Mediapartners-Google|Microsoft .{0,30} Bot|mogimogi|mozDex|MJ12bot|msnbot(?:-media {0,2}|)|msrbot|Mtps Feed Aggregation System|netresearch|Netvibes|NewsGator[^/]{0,30}|^NING|Nutch[^/]{0,30}|Nymesis|ObjectsSearch|OgScrper|Orbiter|OOZBOT|PagePeeker|PagesInventory|PaxleFramework|Peeplo Screenshot Bot|PlantyNet_WebRobot|Pompos|Qwantify|Read%20Later|Reaper|RedCarpet|Retreiver|Riddler|Rival IQ|scooter|Scrapy|Scrubby|searchsight|seekbot|semanticdiscovery|SemrushBot|Simpy|SimplePie|SEOstats|SimpleRSS|SiteCon|Slackbot-LinkExpanding|Slack-ImgProxy|Slurp|snappy|Speedy Spider|Squrl Java|Stringer|TheUsefulbot|ThumbShotsBot|Thumbshots\.ru|Tiny Tiny RSS|Twitterbot|WhatsApp|URL2PNG|Vagabondo|VoilaBot|^vortex|Votay bot|^voyager|WASALive.Bot|Web-sniffer|WebThumb|WeSEE:[A-z]{1,30}|WhatWeb|WIRE|WordPress|Wotbox|www\.almaden\.ibm\.com|Xenu(?:.s|) Link Sleuth|Xerka [A-z]{1,30}Bot|yacy(?:bot|)|YahooSeeker|Yahoo! Slurp|Yandex\w{1,30}|YodaoBot(?:-[A-z]{1,30}|)|YottaaMonitor|Yowedo|^Zao|^Zao-Crawler|ZeBot_www\.ze\.bz|ZooShot|ZyBorg)(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+)|)|)|)",
    // Bots general matcher 'name/0.0'
    r"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50}))[/ ](\d+)(?:\.(\d+)(?:\.(\d+)|)|)",
    // Bots general matcher 'name 0.0'
    r"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50})) (\d+)(?:\.(\d+)(?:\.(\d+)|)|)",
    // Bots containing spider|scrape|bot (but not CUBOT)|Crawl
    r"((?:[A-z0-9]{1,50}|[A-z\-]{1,50} ?|)(?: the |)(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]{0,50})(?:(?:[ /]| v)(\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)",
];

/// Kong's PCRE matching, as far as `regex` goes: bytes, ASCII classes.
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .unicode(false)
        .size_limit(16 << 20)
        .build()
}

fn compile_list(field: &str, patterns: &[String]) -> Result<Vec<Regex>, SpecError> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| {
            compile(p).map_err(|e| {
                let why = match e {
                    regex::Error::Syntax(s) => s.lines().next_back().unwrap_or("").to_string(),
                    other => other.to_string(),
                };
                SpecError::at(
                    format!("{field}[{i}]"),
                    format!("not a valid regex: {p}: {why}"),
                )
            })
        })
        .collect()
}

/// Built-in rules, compiled once per process.
fn bot_rules() -> &'static [Regex] {
    static RULES: std::sync::OnceLock<Vec<Regex>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| BOT_RULES.iter().filter_map(|r| compile(r).ok()).collect())
}

/// Kong's UA cache size per configuration.
const UA_CACHE_ENTRIES: usize = 10_000;
/// A bound on the cached agents' bytes as well (User-Agent values can be long).
const UA_CACHE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Empty,
    Allow,
    Deny,
    Bot,
}

pub struct BotDetection {
    allow: Vec<Regex>,
    deny: Vec<Regex>,
    cache: Mutex<Lru<Box<[u8]>, Verdict>>,
}

impl BotDetection {
    pub fn new(cfg: Config, ctx: &BuildContext<'_>) -> Result<BotDetection, BuildError> {
        if ctx.scope.consumer.is_some() {
            // Kong's schema: `consumer = typedefs.no_consumer`.
            return Err(BuildError::Scope(
                "consumer: value must be null (bot-detection cannot be configured on a consumer)",
            ));
        }
        BotDetection::from_config(cfg)
    }

    fn from_config(cfg: Config) -> Result<BotDetection, BuildError> {
        let allow = compile_list("allow", &cfg.allow)?;
        let deny = compile_list("deny", &cfg.deny)?;
        Ok(BotDetection {
            allow,
            deny,
            cache: Mutex::new(Lru::new(UA_CACHE_ENTRIES, UA_CACHE_BYTES)),
        })
    }

    /// Kong's `examine_agent`: surrounding whitespace stripped, then allow, deny, bots.
    pub fn examine(&self, agent: &[u8]) -> Verdict {
        let ua = strip(agent);
        if self.allow.iter().any(|r| r.is_match(ua)) {
            return Verdict::Allow;
        }
        if self.deny.iter().any(|r| r.is_match(ua)) {
            return Verdict::Deny;
        }
        if bot_rules().iter().any(|r| r.is_match(ua)) {
            return Verdict::Bot;
        }
        Verdict::Empty
    }

    fn verdict(&self, agent: &[u8]) -> Verdict {
        let lock = |c: &Mutex<Lru<Box<[u8]>, Verdict>>| {
            c.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(agent)
                .copied()
        };
        if let Some(v) = lock(&self.cache) {
            return v;
        }
        let v = self.examine(agent);
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(agent.into(), v, agent.len());
        v
    }
}

/// Kong's `strip`: space and \t..\r removed at both ends.
fn strip(s: &[u8]) -> &[u8] {
    let ws = |b: &u8| *b == b' ' || (b'\t'..=b'\r').contains(b);
    let start = s.iter().position(|b| !ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &s[start..end.max(start)]
}

#[async_trait]
impl Plugin for BotDetection {
    // dup: the shape of every plugin file (its own Config, checks and hook types).
    fn name(&self) -> &'static str {
        "bot-detection"
    }

    fn priority(&self) -> i32 {
        2500
    }

    async fn access(
        &self,
        session: &mut Session,
        st: &mut RequestState,
    ) -> crate::core::Result<Flow> {
        let req = session.req_header();
        let accept = || {
            req.headers
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok())
        };
        let mut agents = req.headers.get_all(http::header::USER_AGENT).iter();
        let Some(agent) = agents.next() else {
            return Ok(Flow::Continue);
        };
        if agents.next().is_some() {
            return Ok(Flow::Respond(LocalResponse::error(
                400,
                "Only one User-Agent header allowed",
                &st.request_id,
                accept(),
            )));
        }
        match self.verdict(agent.as_bytes()) {
            Verdict::Deny | Verdict::Bot => Ok(Flow::Respond(LocalResponse::error(
                403,
                "Forbidden",
                &st.request_id,
                accept(),
            ))),
            Verdict::Allow | Verdict::Empty => Ok(Flow::Continue),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(allow: &[&str], deny: &[&str]) -> BotDetection {
        let cfg = Config {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        };
        BotDetection::from_config(cfg).expect("valid config")
    }

    #[test]
    fn every_kong_rule_compiles() {
        for r in BOT_RULES {
            assert!(compile(r).is_ok(), "{r}");
        }
        assert_eq!(bot_rules().len(), BOT_RULES.len());
    }

    #[test]
    fn kong_spec_agents() {
        let p = plugin(&[], &[]);
        let chrome = b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/50.0.2661.102 Safari/537.36";
        assert_eq!(p.examine(chrome), Verdict::Empty);
        assert_eq!(p.examine(b"curl/7.43.0"), Verdict::Empty);
        assert_eq!(p.examine(b"hello world"), Verdict::Empty);
        assert_eq!(
            p.examine(b"Googlebot/2.1 (+http://www.google.com/bot.html)"),
            Verdict::Bot
        );
        assert_eq!(
            p.examine(b"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
            Verdict::Bot
        );
        assert_eq!(p.examine(b"reqwest/0.12"), Verdict::Bot);
        assert_eq!(p.examine(b"python-requests/2.31 Scrapy/2.0"), Verdict::Bot);
        assert_eq!(p.examine(b"  Twitterbot/1.0  "), Verdict::Bot);
        // Non-UTF-8 bytes are matched as bytes.
        assert_eq!(p.examine(b"caf\xe9 browser"), Verdict::Empty);
    }

    #[test]
    fn allow_wins_then_deny_then_rules() {
        let p = plugin(&["facebookexternalhit/"], &["hello", "facebook"]);
        assert_eq!(p.examine(b"facebookexternalhit/1.1"), Verdict::Allow);
        assert_eq!(p.examine(b"hello world"), Verdict::Deny);
        assert_eq!(p.examine(b"Twitterbot/1.0"), Verdict::Bot);
        // Cached verdicts are the same.
        assert_eq!(p.verdict(b"hello world"), Verdict::Deny);
        assert_eq!(p.verdict(b"hello world"), Verdict::Deny);
    }

    #[test]
    fn pcre_only_patterns_are_errors_naming_the_field() {
        let c = Config {
            allow: vec!["ok".into()],
            deny: vec!["fine".into(), "(?<=x)y".into()],
        };
        let e = c.validate().err().map(|e| match e {
            SpecError::Invalid { path, message } => format!("{path}: {message}"),
            other => other.to_string(),
        });
        let e = e.unwrap_or_default();
        assert!(e.starts_with("deny[1]: not a valid regex: (?<=x)y"), "{e}");
    }

    #[test]
    fn non_ascii_literals_and_flags_compile() {
        let p = plugin(&["(?i)^MyCrawler", "caf\u{e9}"], &[]);
        assert_eq!(p.examine(b"mycrawler/1.0"), Verdict::Allow);
        assert_eq!(p.examine("le caf\u{e9} bot/1.0".as_bytes()), Verdict::Allow);
        assert_eq!(p.examine(b"some spider/2.0"), Verdict::Bot);
    }

    #[test]
    fn strip_matches_kong() {
        assert_eq!(strip(b" \t a b \r\n"), b"a b");
        assert_eq!(strip(b"   "), b"");
        assert_eq!(strip(b""), b"");
    }
}
