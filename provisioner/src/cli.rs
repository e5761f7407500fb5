//! Command line: plan / up / status / deploy / render / down.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::aws::{Aws, AwsProvider};
use crate::config::Env;
use crate::deploy::{self, AlbTargetHealth, DeployOptions, TaskSetStability};
use crate::desired::{self, Ctx};
use crate::engine::{self, EngineError, Event, Mode, Options, Provider};
use crate::grafana::{self, Grafana};
use crate::model::{Ids, Key};
use crate::plan::{Action, Change, Summary, render_text};

#[derive(Parser, Debug)]
#[command(
    name = "provisioner",
    version,
    about = "Stands up the edge-suite AWS environment"
)]
pub struct Cli {
    /// Send every AWS call to this endpoint (an emulator such as moto).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Directory with `<env>.toml` files (default: provisioner/envs or envs).
    #[arg(long, global = true, env = "PROVISIONER_ENVS_DIR")]
    pub envs_dir: Option<PathBuf>,
    /// Seconds to wait for slow resources (NAT gateways, RDS, Redis, ALB).
    #[arg(long, global = true, default_value_t = 1800)]
    pub wait_timeout: u64,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum HealthSourceArg {
    /// ALB target health of the new target group plus the 5xx alarms.
    Alb,
    /// ECS task-set stability plus the 5xx alarms (emulators run no tasks).
    TaskSet,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show what `up` would change, resource by resource.
    Plan {
        env: String,
        /// Exit 0 when nothing would change, 2 when something would, 1 on error.
        #[arg(long)]
        detailed_exitcode: bool,
        /// Also list unchanged resources.
        #[arg(long)]
        verbose: bool,
    },
    /// Create or update everything until it matches the env file. Shows the
    /// plan and asks on a terminal; without one, refuses unless `--yes`.
    Up {
        env: String,
        /// Apply without asking (CI).
        #[arg(long)]
        yes: bool,
    },
    /// Each resource, its state, and the environment's URLs.
    Status { env: String },
    /// Blue-green roll of the gateway service to a new image.
    Deploy {
        env: String,
        /// Image reference for the gateway container (default: the current
        /// one; the repo's gateway configuration is rolled out either way).
        #[arg(long)]
        image: Option<String>,
        #[arg(long, value_enum, default_value_t = HealthSourceArg::Alb)]
        health_source: HealthSourceArg,
        /// Seconds the new task set gets to become healthy.
        #[arg(long, default_value_t = 600)]
        health_timeout: u64,
    },
    /// Print the gateway task definition `up` would register (JSON, the shape
    /// of `aws ecs register-task-definition --cli-input-json`), offline: no AWS
    /// call; endpoints and ARNs only AWS knows stay `(known after apply)`,
    /// secrets are references. Region: `AWS_REGION`, else us-east-1.
    Render { env: String },
    /// Remove everything this tool made, in dependency order.
    Down {
        env: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

/// Exit codes.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_CHANGES: i32 = 2;
pub const EXIT_ROLLED_BACK: i32 = 3;

struct Session {
    env: Env,
    aws: Aws,
    grafana: Option<Grafana>,
    ctx: Ctx,
}

impl Session {
    async fn open(cli: &Cli, env_name: &str) -> anyhow::Result<Session> {
        Session::open_with(cli, env_name, true).await
    }

    /// `with_config`: render and validate the gateway's kong.yml (every
    /// command but `down`, which must work whatever the repo holds).
    async fn open_with(cli: &Cli, env_name: &str, with_config: bool) -> anyhow::Result<Session> {
        let env = Env::load(&Env::resolve(env_name, &envs_dir(cli)))?;
        let cfg = &env.cfg;
        let gateway_config = if with_config {
            Some(gateway_config(&env)?)
        } else {
            None
        };
        let mut aws = Aws::connect(
            cli.endpoint_url.as_deref(),
            &cfg.project,
            &cfg.name,
            &cfg.prefix(),
            Duration::from_secs(cli.wait_timeout),
        )
        .await?;
        aws.disposable = cfg.disposable;
        aws.hosted_zone = cfg.dns.hosted_zone.clone();
        aws.domain = cfg.dns.domain.clone();
        let grafana = match &cfg.grafana {
            Some(g) => {
                let url = std::env::var("GRAFANA_URL").unwrap_or_else(|_| g.url.clone());
                match std::env::var(&g.api_key_env) {
                    Ok(key) if !key.is_empty() => Some(Grafana::new(
                        &url,
                        key,
                        format!("provisioner:{}", cfg.prefix()),
                        g.folder_uid.clone(),
                    )?),
                    _ => {
                        crate::progress::note(&format!(
                            "note: {} is not set; Grafana dashboards are not managed in this run",
                            g.api_key_env
                        ));
                        None
                    }
                }
            }
            None => None,
        };
        let dir = env.dashboards_dir();
        let pagerduty =
            crate::aws::secret::optional_value(&aws, &cfg.alarms.pagerduty_key_secret).await?;
        if pagerduty.is_none() {
            crate::progress::note(&format!(
                "note: secret {} not found; alarms go to the SNS topic without a PagerDuty subscription",
                cfg.alarms.pagerduty_key_secret
            ));
        }
        let azs = aws.availability_zones().await?;
        if azs.len() < cfg.network.az_count {
            anyhow::bail!(
                "region {} has {} availability zones, {} needs {}",
                aws.region,
                azs.len(),
                cfg.name,
                cfg.network.az_count
            );
        }
        let ctx = Ctx {
            region: aws.region.clone(),
            account_id: aws.account_id.clone(),
            azs,
            dashboards: grafana::load_dashboards(&dir)?,
            rule_files: grafana::load_rule_files(&dir)?,
            pagerduty_endpoint: pagerduty
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            grafana_enabled: grafana.is_some(),
            gateway_config,
        };
        Ok(Session {
            env,
            aws,
            grafana,
            ctx,
        })
    }

    fn provider(&self) -> AwsProvider<'_> {
        AwsProvider {
            aws: &self.aws,
            grafana: self.grafana.as_ref(),
        }
    }

    async fn run(
        &self,
        mode: Mode,
        everything: bool,
        opts: &Options,
    ) -> Result<Vec<Change>, EngineError> {
        let cfg = &self.env.cfg;
        let ctx = &self.ctx;
        let build = |ids: &Ids| desired::build(cfg, ctx, ids);
        let nothing = |_: &Ids| Vec::new();
        let desired: &dyn Fn(&Ids) -> Vec<crate::model::Desired> =
            if everything { &build } else { &nothing };
        let mut on_event = |e: Event<'_>| match e {
            Event::Start(c) => crate::progress::note(&format!("{} {} ...", verb(c.action), c.key)),
            Event::Done(c, d) => crate::progress::note(&format!(
                "{} {} done ({:.1}s)",
                verb(c.action),
                c.key,
                d.as_secs_f64()
            )),
        };
        engine::reconcile(&self.provider(), desired, mode, opts, &mut on_event).await
    }
}

/// `--envs-dir`, else provisioner/envs or envs.
fn envs_dir(cli: &Cli) -> PathBuf {
    cli.envs_dir.clone().unwrap_or_else(|| {
        let p = PathBuf::from("provisioner/envs");
        if p.is_dir() { p } else { PathBuf::from("envs") }
    })
}

/// Asks on the terminal before `up` changes anything; refuses without one.
fn confirm_up(env: &str) -> anyhow::Result<()> {
    let terminal = std::io::stdin().is_terminal();
    confirm(env, terminal, &mut std::io::stdin().lock())
}

/// The answer to `up`'s question, read from `input` when it is a terminal.
fn confirm(env: &str, terminal: bool, input: &mut dyn BufRead) -> anyhow::Result<()> {
    if !terminal {
        anyhow::bail!(
            "refusing to apply without confirmation: no terminal to ask on; review the plan above and pass --yes"
        );
    }
    eprint!("Apply these changes to {env}? Only `yes` is accepted: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    input.read_line(&mut line)?;
    if line.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing changed");
    }
    Ok(())
}

/// Renders the environment's kong.yml and loads it with the gateway's
/// loader, as the task will (its environment, stand-ins for its secrets).
fn gateway_config(env: &Env) -> anyhow::Result<crate::gateway_config::Rendered> {
    let rendered = crate::gateway_config::load(&env.gateway_config_path(), &env.cfg)?;
    let plain = desired::gateway_environment(&env.cfg, &Ids::default());
    let warnings =
        crate::gateway_config::validate(&rendered, &plain, &desired::gateway_secret_names())?;
    for w in warnings {
        crate::progress::note(&format!("warning: {w}"));
    }
    Ok(rendered)
}

impl Session {
    /// After `up`: the environment's own Grafana (when no external one is
    /// configured) gets the AMP data source and every dashboard, through its
    /// HTTP API as `admin`. A Grafana that does not answer yet (its first
    /// task still starting) is a note, not a failure: the next `up` pushes.
    async fn provision_grafana(&self, changes: &[Change]) -> anyhow::Result<()> {
        let cfg = &self.env.cfg;
        if self.grafana.is_some() || !cfg.grafana_service.enabled {
            return Ok(());
        }
        let url = std::env::var("PROVISIONER_GRAFANA_URL")
            .unwrap_or_else(|_| cfg.grafana_service.url(&cfg.dns.domain));
        let later = "the AMP data source and dashboards are pushed by the next `up`";
        if self.aws.emulator && std::env::var_os("PROVISIONER_GRAFANA_URL").is_none() {
            crate::progress::note(&format!(
                "note: Grafana at {url}: not contacted (an emulator runs no tasks); {later}"
            ));
            return Ok(());
        }
        let secret = desired::secret_name(cfg, "grafana-admin-password");
        let Some(password) = crate::aws::secret::optional_value(&self.aws, &secret).await? else {
            crate::progress::note(&format!("note: secret {secret} not found; {later}"));
            return Ok(());
        };
        let g = Grafana::basic(
            &url,
            "admin",
            password,
            format!("provisioner:{}", cfg.prefix()),
        )?;
        // A new or changed service starts a task (image pull, database
        // migration, ALB health checks: a few minutes at most); otherwise it
        // answers now or not at all (e.g. no DNS record for the domain yet).
        let starting = changes.iter().any(|c| {
            matches!(
                c.key.kind,
                crate::model::Kind::GrafanaService | crate::model::Kind::GrafanaTaskDefinition
            ) && c.action != Action::NoOp
        });
        let wait = if starting {
            Duration::from_secs(cli_grafana_wait(self.aws.wait_timeout))
        } else {
            Duration::ZERO
        };
        let up = crate::aws::wait_for("Grafana to answer", wait, || async {
            Ok(g.healthy().await.then_some(()))
        })
        .await;
        if up.is_err() {
            crate::progress::note(&format!(
                "note: Grafana at {url} does not answer yet; {later}"
            ));
            return Ok(());
        }
        let workspace = crate::aws::amp::observe(&self.aws).await?;
        let Some(endpoint) = workspace
            .iter()
            .find(|a| a.key.kind == crate::model::Kind::AmpWorkspace)
            .and_then(|a| a.outputs.get("endpoint"))
        else {
            anyhow::bail!("the AMP workspace is missing after `up`");
        };
        let ds = grafana::amp_datasource(endpoint, &self.aws.region);
        let how = g.ensure_datasource(&ds).await?;
        let (uploaded, deleted) = g.sync_dashboards(&self.ctx.dashboards).await?;
        crate::progress::note(&format!(
            "Grafana at {url}: AMP data source {how}; {uploaded} dashboard(s) uploaded, {deleted} removed"
        ));
        Ok(())
    }

    /// A note when the repo's gateway configuration is not the deployed one:
    /// after the first `up`, `deploy` rolls it out (like an image).
    async fn note_config_drift(&self) -> anyhow::Result<()> {
        let Some(repo) = &self.ctx.gateway_config else {
            return Ok(());
        };
        let deployed = crate::aws::task_definition::observe(&self.aws).await?;
        if let Some(hash) = deployed
            .first()
            .and_then(|a| a.outputs.get("gateway_config_hash"))
            .filter(|h| !h.is_empty() && **h != repo.hash)
        {
            crate::progress::note(&format!(
                "note: {} (gateway configuration {}) differs from the deployed one ({hash}); \
                 `provisioner deploy {}` rolls it out blue-green",
                repo.source, repo.hash, self.env.cfg.name
            ));
        }
        Ok(())
    }
}

/// Seconds `up` waits for the environment's Grafana: at most 10 minutes.
fn cli_grafana_wait(timeout: Duration) -> u64 {
    timeout.as_secs().min(600)
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Delete => "deleting",
        Action::Replace => "replacing",
        Action::NoOp => "checking",
    }
}

fn fail_before() -> Option<Key> {
    std::env::var("PROVISIONER_FAIL_BEFORE")
        .ok()
        .and_then(|s| Key::parse(&s))
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

fn changes_json(env: &str, command: &str, changes: &[Change], applied: bool) -> serde_json::Value {
    let interesting: Vec<&Change> = changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    json!({
        "command": command,
        "env": env,
        "applied": applied,
        "summary": Summary::of(changes),
        "changes": interesting,
        "unchanged": changes.iter().filter(|c| c.action == Action::NoOp).map(|c| c.key.to_string()).collect::<Vec<_>>(),
    })
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    match dispatch(&cli).await {
        Ok(code) => code,
        Err(e) => {
            if cli.output == Output::Json {
                print_json(&json!({"error": format!("{e:#}")}));
            }
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

// dup: alike in shape only (other types and fields); kept apart on purpose.
async fn dispatch(cli: &Cli) -> anyhow::Result<i32> {
    let started = Instant::now();
    match &cli.command {
        Command::Render { env } => {
            let env = Env::load(&Env::resolve(env, &envs_dir(cli)))?;
            let region = std::env::var("AWS_REGION")
                .ok()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| crate::render::DEFAULT_REGION.to_string());
            let ctx = crate::render::offline_ctx(&env, &region, gateway_config(&env)?)?;
            print_json(&crate::render::task_definition(&env, &ctx)?);
            Ok(EXIT_OK)
        }
        Command::Plan {
            env,
            detailed_exitcode,
            verbose,
        } => {
            let s = Session::open(cli, env).await?;
            let changes = s.run(Mode::Plan, true, &Options::default()).await?;
            s.note_config_drift().await?;
            let summary = Summary::of(&changes);
            match cli.output {
                Output::Json => print_json(&changes_json(&s.env.cfg.name, "plan", &changes, false)),
                Output::Text => print!(
                    "{}",
                    render_text(
                        &format!("Plan for {} ({}):", s.env.cfg.name, s.env.cfg.prefix()),
                        &changes,
                        *verbose
                    )
                ),
            }
            Ok(if *detailed_exitcode && summary.has_changes() {
                EXIT_CHANGES
            } else {
                EXIT_OK
            })
        }
        Command::Up { env, yes } => {
            let s = Session::open(cli, env).await?;
            if !yes {
                let planned = s.run(Mode::Plan, true, &Options::default()).await?;
                if Summary::of(&planned).has_changes() {
                    eprint!(
                        "{}",
                        render_text(
                            &format!("Plan for {} ({}):", s.env.cfg.name, s.env.cfg.prefix()),
                            &planned,
                            false
                        )
                    );
                    confirm_up(&s.env.cfg.name)?;
                }
            }
            let opts = Options {
                fail_before: fail_before(),
            };
            let changes = match s.run(Mode::Apply, true, &opts).await {
                Ok(c) => c,
                Err(e @ EngineError::Step { .. }) | Err(e @ EngineError::Injected(_)) => {
                    anyhow::bail!(
                        "{e}\nnothing is lost: run `provisioner up {env}` again to resume"
                    )
                }
                Err(e) => return Err(e.into()),
            };
            s.note_config_drift().await?;
            s.provision_grafana(&changes).await?;
            match cli.output {
                Output::Json => {
                    let mut v = changes_json(&s.env.cfg.name, "up", &changes, true);
                    v["seconds"] = json!(started.elapsed().as_secs());
                    print_json(&v);
                }
                Output::Text => print!(
                    "{}",
                    render_text(
                        &format!(
                            "Applied to {} in {}s:",
                            s.env.cfg.name,
                            started.elapsed().as_secs()
                        ),
                        &changes,
                        false
                    )
                ),
            }
            Ok(EXIT_OK)
        }
        Command::Status { env } => {
            let s = Session::open(cli, env).await?;
            status(cli, &s).await
        }
        Command::Deploy {
            env,
            image,
            health_source,
            health_timeout,
        } => {
            let s = Session::open(cli, env).await?;
            if let Some(image) = image {
                s.env.cfg.check_deploy_image(image)?;
            }
            let opts = DeployOptions {
                image: image.clone(),
                gateway_config: s.ctx.gateway_config.clone(),
                health_timeout: Duration::from_secs(*health_timeout),
                guard_alarms: desired::deploy_guard_alarms(&s.env.cfg),
            };
            let report = match health_source {
                HealthSourceArg::Alb => deploy::deploy(&s.aws, &AlbTargetHealth, &opts).await?,
                HealthSourceArg::TaskSet => {
                    deploy::deploy(&s.aws, &TaskSetStability, &opts).await?
                }
            };
            match cli.output {
                Output::Json => print_json(&serde_json::to_value(&report)?),
                Output::Text => {
                    println!("deploy {}: {}", report.result, report.image);
                    println!("  gateway configuration: {}", report.gateway_config_hash);
                    println!("  task definition: {}", report.task_definition);
                    println!("  live target group: {}", report.live_target_group);
                    if let Some(r) = &report.reason {
                        println!("  reason: {r}");
                    }
                }
            }
            Ok(if report.result == "deployed" {
                EXIT_OK
            } else {
                EXIT_ROLLED_BACK
            })
        }
        Command::Down { env, yes } => {
            let s = Session::open_with(cli, env, false).await?;
            let planned = s.run(Mode::Plan, false, &Options::default()).await?;
            if planned.is_empty() {
                match cli.output {
                    Output::Json => {
                        print_json(&changes_json(&s.env.cfg.name, "down", &planned, true))
                    }
                    Output::Text => println!("Nothing of {} exists.", s.env.cfg.name),
                }
                return Ok(EXIT_OK);
            }
            // Refuse before deleting anything, not halfway through.
            let blockers: Vec<String> = s
                .provider()
                .observe()
                .await?
                .iter()
                .filter(|a| a.key.kind == crate::model::Kind::DbInstance)
                .filter_map(|a| crate::aws::rds::teardown_blocker(a, s.env.cfg.disposable))
                .collect();
            if !blockers.is_empty() {
                anyhow::bail!(
                    "refusing to take down {}: {}",
                    s.env.cfg.name,
                    blockers.join("; ")
                );
            }
            if !yes {
                eprint!(
                    "{}",
                    render_text(&format!("Down {}:", s.env.cfg.name), &planned, false)
                );
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!("refusing to delete without confirmation: pass --yes");
                }
                eprint!(
                    "Type the environment name ({}) to delete all of it: ",
                    s.env.cfg.name
                );
                let _ = std::io::stderr().flush();
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line)?;
                if line.trim() != s.env.cfg.name {
                    anyhow::bail!("not confirmed; nothing deleted");
                }
            }
            let opts = Options {
                fail_before: fail_before(),
            };
            let changes = s.run(Mode::Apply, false, &opts).await?;
            match cli.output {
                Output::Json => print_json(&changes_json(&s.env.cfg.name, "down", &changes, true)),
                Output::Text => print!(
                    "{}",
                    render_text(
                        &format!(
                            "Removed from {} in {}s:",
                            s.env.cfg.name,
                            started.elapsed().as_secs()
                        ),
                        &changes,
                        false
                    )
                ),
            }
            Ok(EXIT_OK)
        }
    }
}

async fn status(cli: &Cli, s: &Session) -> anyhow::Result<i32> {
    use crate::engine::Provider;
    let actual = s.provider().observe().await?;
    let changes = s.run(Mode::Plan, true, &Options::default()).await?;
    let find = |k: &Key| actual.iter().find(|a| &a.key == k);
    let out = |k: crate::model::Kind, n: &str, o: &str| {
        find(&Key::new(k, n)).and_then(|a| a.outputs.get(o).cloned())
    };
    use crate::model::Kind as K;
    let urls = json!({
        "alb": out(K::LoadBalancer, "main", "dns_name").map(|d| format!("https://{d}")),
        "domain": format!("https://{}", s.env.cfg.dns.domain),
        "grafana": s.grafana.as_ref().map(|g| g.base.clone()).or_else(|| s.env.cfg.grafana.as_ref().map(|g| g.url.clone())),
        "prometheus_remote_write": out(K::AmpWorkspace, "main", "endpoint").map(|e| format!("{e}api/v1/remote_write")),
        "database": out(K::DbInstance, "main", "endpoint"),
        "redis": out(K::ReplicationGroup, "main", "endpoint"),
        "certificate_validation_record": out(K::Certificate, "main", "validation_record"),
    });
    let rows: Vec<serde_json::Value> = changes
        .iter()
        .map(|c| {
            let a = find(&c.key);
            let sync = match c.action {
                Action::NoOp => "in-sync",
                Action::Create => "missing",
                Action::Update | Action::Replace => "drifted",
                Action::Delete => "extra",
            };
            json!({
                "key": c.key.to_string(),
                "id": a.map(|a| a.id.clone()),
                "state": a.map(|a| a.state.clone()).unwrap_or_else(|| "-".into()),
                "sync": sync,
            })
        })
        .collect();
    match cli.output {
        Output::Json => {
            print_json(&json!({"env": s.env.cfg.name, "resources": rows, "urls": urls}))
        }
        Output::Text => {
            println!("Status of {} ({}):", s.env.cfg.name, s.env.cfg.prefix());
            let w = rows
                .iter()
                .map(|r| r["key"].as_str().unwrap_or_default().len())
                .max()
                .unwrap_or(0);
            for r in &rows {
                println!(
                    "  {:<w$}  {:<9} {:<20} {}",
                    r["key"].as_str().unwrap_or_default(),
                    r["sync"].as_str().unwrap_or_default(),
                    r["state"].as_str().unwrap_or_default(),
                    r["id"].as_str().unwrap_or_default(),
                );
            }
            println!("\nURLs:");
            if let Some(m) = urls.as_object() {
                for (k, v) in m {
                    println!("  {k:<24} {}", v.as_str().unwrap_or("-"));
                }
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_asks_for_yes_on_a_terminal_only() {
        assert!(confirm("staging", true, &mut "yes\n".as_bytes()).is_ok());
        let no = confirm("staging", true, &mut "y\n".as_bytes()).expect_err("only yes");
        assert_eq!(no.to_string(), "not confirmed; nothing changed");
        assert!(confirm("staging", true, &mut "".as_bytes()).is_err(), "EOF");
        let refused = confirm("staging", false, &mut "yes\n".as_bytes())
            .expect_err("no terminal: never reads");
        assert!(refused.to_string().contains("pass --yes"), "{refused}");
    }

    #[test]
    fn contract_flags_parse() {
        let cli = Cli::try_parse_from([
            "provisioner",
            "plan",
            "staging",
            "--detailed-exitcode",
            "--output",
            "json",
            "--endpoint-url",
            "http://127.0.0.1:5000",
        ])
        .expect("plan parses");
        assert_eq!(cli.output, Output::Json);
        assert_eq!(cli.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(matches!(
            cli.command,
            Command::Plan {
                detailed_exitcode: true,
                ..
            }
        ));
        let cli = Cli::try_parse_from([
            "provisioner",
            "deploy",
            "production",
            "--image",
            "r/gateway:v2",
        ])
        .expect("deploy parses");
        assert!(matches!(
            cli.command,
            Command::Deploy {
                health_source: HealthSourceArg::Alb,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["provisioner", "deploy", "staging"])
            .expect("deploy without --image keeps the image, rolls the configuration");
        assert!(matches!(cli.command, Command::Deploy { image: None, .. }));
        let cli =
            Cli::try_parse_from(["provisioner", "up", "staging", "--yes"]).expect("up parses");
        assert!(matches!(cli.command, Command::Up { yes: true, .. }));
        let cli = Cli::try_parse_from(["provisioner", "up", "staging"]).expect("up parses");
        assert!(matches!(cli.command, Command::Up { yes: false, .. }));
        let cli = Cli::try_parse_from(["provisioner", "render", "staging"]).expect("render parses");
        assert!(matches!(cli.command, Command::Render { .. }));
        let cli =
            Cli::try_parse_from(["provisioner", "down", "staging", "--yes"]).expect("down parses");
        assert!(matches!(cli.command, Command::Down { yes: true, .. }));
    }
}
