//! The reconcile loop. Plain Rust over the [`Provider`] trait, so unit tests
//! drive it with an in-memory provider and the CLI with the AWS one.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::model::{Actual, Desired, Ids, Key};
use crate::plan::{Action, Change, decide};

/// Access to the real resources of one environment.
pub trait Provider {
    /// Every resource of the environment that exists now (found by tags and
    /// names), in any order.
    fn observe(&self) -> impl Future<Output = Result<Vec<Actual>, Error>>;
    fn create(&self, desired: &Desired) -> impl Future<Output = Result<Actual, Error>>;
    /// `changed` lists the fields that differ (never immutable ones).
    fn update(
        &self,
        actual: &Actual,
        desired: &Desired,
        changed: &[String],
    ) -> impl Future<Output = Result<Actual, Error>>;
    fn delete(&self, actual: &Actual) -> impl Future<Output = Result<(), Error>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// Progress notifications for long runs.
pub enum Event<'a> {
    Start(&'a Change),
    Done(&'a Change, Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("observing the environment failed: {0}")]
    Observe(Error),
    #[error("{key}: {action:?} failed: {source}")]
    Step {
        key: Key,
        action: Action,
        source: Error,
        /// Changes applied before the failure (a later `up` resumes).
        done: usize,
    },
    #[error(
        "{key} needs replacement because immutable field(s) {fields} changed; change them back, or `down` and `up` the environment"
    )]
    ReplacementRequired { key: Key, fields: String },
    #[error("{key} still refers to a resource that does not exist (dependency order bug)")]
    Unresolved { key: Key },
    #[error("{key} depends on {dep}, which is not created before it")]
    Order { key: Key, dep: Key },
    #[error("duplicate resource key {0}")]
    Duplicate(Key),
    #[error("injected failure before {0} (PROVISIONER_FAIL_BEFORE)")]
    Injected(Key),
}

/// Knobs of one run.
#[derive(Default)]
pub struct Options {
    /// Fault injection for tests: fail right before touching this key.
    pub fail_before: Option<Key>,
}

/// Orders desired resources by kind rank, keeping the builder's order inside a
/// kind, and checks that every dependency comes first.
pub fn order(desired: &[Desired]) -> Result<Vec<Key>, EngineError> {
    let mut seen = BTreeSet::new();
    for d in desired {
        if !seen.insert(d.key.clone()) {
            return Err(EngineError::Duplicate(d.key.clone()));
        }
    }
    let mut idx: Vec<(usize, usize)> = desired
        .iter()
        .enumerate()
        .map(|(i, d)| (d.key.kind.rank(), i))
        .collect();
    idx.sort();
    let keys: Vec<Key> = idx.iter().map(|&(_, i)| desired[i].key.clone()).collect();
    let pos: BTreeMap<&Key, usize> = keys.iter().enumerate().map(|(i, k)| (k, i)).collect();
    for d in desired {
        for dep in &d.deps {
            let ok = matches!((pos.get(dep), pos.get(&d.key)), (Some(a), Some(b)) if a < b);
            if !ok {
                return Err(EngineError::Order {
                    key: d.key.clone(),
                    dep: dep.clone(),
                });
            }
        }
    }
    Ok(keys)
}

/// Plans or applies. `desired` renders the full desired set from the ids
/// known so far; it is called again before every step so that references to
/// resources created earlier in the same run resolve.
pub async fn reconcile<P: Provider>(
    provider: &P,
    desired: &dyn Fn(&Ids) -> Vec<Desired>,
    mode: Mode,
    opts: &Options,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<Vec<Change>, EngineError> {
    let observed = provider.observe().await.map_err(EngineError::Observe)?;
    let mut actual: BTreeMap<Key, Actual> = BTreeMap::new();
    let mut ids = Ids::default();
    for a in observed {
        ids.record(&a);
        actual.insert(a.key.clone(), a);
    }

    let keys = order(&desired(&ids))?;
    let wanted: BTreeSet<Key> = keys.iter().cloned().collect();
    let mut changes = Vec::new();
    let mut done = 0usize;

    for key in &keys {
        let Some(d) = desired(&ids).into_iter().find(|d| &d.key == key) else {
            continue;
        };
        let Some(change) = decide(Some(&d), actual.get(key)) else {
            continue;
        };
        match mode {
            Mode::Plan => {
                let id_changes = change.action == Action::Create
                    || (change.action == Action::Update && key.kind.id_changes_on_update());
                if id_changes {
                    ids.forget(key);
                }
            }
            Mode::Apply => {
                if change.action != Action::NoOp && opts.fail_before.as_ref() == Some(key) {
                    return Err(EngineError::Injected(key.clone()));
                }
                let start = Instant::now();
                match change.action {
                    Action::NoOp => {}
                    Action::Replace => {
                        let fields = change
                            .fields
                            .iter()
                            .map(|f| f.field.as_str())
                            .filter(|f| key.kind.immutable_fields().contains(f))
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(EngineError::ReplacementRequired {
                            key: key.clone(),
                            fields,
                        });
                    }
                    Action::Create | Action::Update => {
                        if d.has_pending() {
                            return Err(EngineError::Unresolved { key: key.clone() });
                        }
                        on_event(Event::Start(&change));
                        let result = match (change.action, actual.get(key)) {
                            (Action::Update, Some(a)) => {
                                let fields: Vec<String> =
                                    change.fields.iter().map(|f| f.field.clone()).collect();
                                provider.update(a, &d, &fields).await
                            }
                            _ => provider.create(&d).await,
                        };
                        let a = result.map_err(|source| EngineError::Step {
                            key: key.clone(),
                            action: change.action,
                            source,
                            done,
                        })?;
                        ids.record(&a);
                        actual.insert(key.clone(), a);
                        done += 1;
                        on_event(Event::Done(&change, start.elapsed()));
                    }
                    Action::Delete => {}
                }
            }
        }
        changes.push(change);
    }

    // Whatever exists but is no longer wanted goes, dependents first.
    let mut extra: Vec<&Actual> = actual
        .values()
        .filter(|a| !wanted.contains(&a.key) && !a.key.kind.shared())
        .collect();
    extra.sort_by(|a, b| {
        b.key
            .kind
            .rank()
            .cmp(&a.key.kind.rank())
            .then_with(|| b.key.name.cmp(&a.key.name))
    });
    for a in extra {
        let Some(change) = decide(None, Some(a)) else {
            continue;
        };
        if mode == Mode::Apply {
            if opts.fail_before.as_ref() == Some(&a.key) {
                return Err(EngineError::Injected(a.key.clone()));
            }
            let start = Instant::now();
            on_event(Event::Start(&change));
            provider
                .delete(a)
                .await
                .map_err(|source| EngineError::Step {
                    key: a.key.clone(),
                    action: Action::Delete,
                    source,
                    done,
                })?;
            done += 1;
            on_event(Event::Done(&change, start.elapsed()));
        }
        changes.push(change);
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, PENDING};
    use crate::plan::Summary;
    use serde_json::json;
    use std::cell::RefCell;

    /// An in-memory account. `fail_on` makes one create fail once.
    #[derive(Default)]
    struct Fake {
        items: RefCell<BTreeMap<Key, Actual>>,
        log: RefCell<Vec<String>>,
        next: RefCell<u32>,
    }

    impl Provider for Fake {
        async fn observe(&self) -> Result<Vec<Actual>, Error> {
            Ok(self.items.borrow().values().cloned().collect())
        }
        async fn create(&self, d: &Desired) -> Result<Actual, Error> {
            *self.next.borrow_mut() += 1;
            let id = format!("{}-{}", d.key.kind, self.next.borrow());
            let mut a = Actual::new(d.key.clone(), id, &json!({}));
            a.props = d.props.clone();
            self.log.borrow_mut().push(format!("create {}", d.key));
            self.items.borrow_mut().insert(d.key.clone(), a.clone());
            Ok(a)
        }
        async fn update(
            &self,
            a: &Actual,
            d: &Desired,
            changed: &[String],
        ) -> Result<Actual, Error> {
            let mut n = a.clone();
            for f in changed {
                if let Some(v) = d.props.get(f) {
                    n.props.insert(f.clone(), v.clone());
                }
            }
            if d.key.kind.id_changes_on_update() {
                *self.next.borrow_mut() += 1;
                n.id = format!("{}-{}", d.key.kind, self.next.borrow());
            }
            self.log
                .borrow_mut()
                .push(format!("update {} {}", d.key, changed.join(",")));
            self.items.borrow_mut().insert(d.key.clone(), n.clone());
            Ok(n)
        }
        async fn delete(&self, a: &Actual) -> Result<(), Error> {
            self.log.borrow_mut().push(format!("delete {}", a.key));
            self.items.borrow_mut().remove(&a.key);
            Ok(())
        }
    }

    /// vpc -> 2 subnets -> task definition (image) -> service (refs task def).
    fn world(subnets: &[&str], image: &str, count: u32) -> impl Fn(&Ids) -> Vec<Desired> {
        let subnets: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
        let image = image.to_string();
        move |ids: &Ids| {
            let vpc = Key::new(Kind::Vpc, "main");
            // Declared out of order on purpose: the engine sorts by kind.
            let mut v = vec![Desired::new(
                Key::new(Kind::EcsService, "gw"),
                &json!({"task_definition": ids.id(Kind::TaskDefinition, "gw"), "desired_count": count}),
                vec![Key::new(Kind::TaskDefinition, "gw")],
            )];
            v.push(Desired::new(
                vpc.clone(),
                &json!({"cidr": "10.0.0.0/16"}),
                vec![],
            ));
            for s in &subnets {
                v.push(Desired::new(
                    Key::new(Kind::Subnet, s.clone()),
                    &json!({"vpc_id": ids.id(Kind::Vpc, "main"), "cidr": format!("10.0.{}.0/24", s.len())}),
                    vec![vpc.clone()],
                ));
            }
            v.push(Desired::new(
                Key::new(Kind::TaskDefinition, "gw"),
                &json!({"image": image}),
                vec![],
            ));
            v
        }
    }

    async fn run(
        f: &Fake,
        w: &dyn Fn(&Ids) -> Vec<Desired>,
        mode: Mode,
    ) -> Result<Vec<Change>, EngineError> {
        reconcile(f, w, mode, &Options::default(), &mut |_| {}).await
    }

    #[tokio::test]
    async fn plan_on_empty_lists_everything_and_apply_is_idempotent() {
        let f = Fake::default();
        let w = world(&["a", "b"], "gw:1", 2);
        let plan = run(&f, &w, Mode::Plan).await.expect("plan");
        assert_eq!(Summary::of(&plan).create, 5);
        // Plan does not touch anything, and unresolved refs show as pending.
        assert!(f.log.borrow().is_empty());
        let sub = plan
            .iter()
            .find(|c| c.key.kind == Kind::Subnet)
            .expect("subnet");
        assert!(sub.fields.iter().any(|fc| fc.to == Some(json!(PENDING))));

        let applied = run(&f, &w, Mode::Apply).await.expect("apply");
        assert_eq!(Summary::of(&applied).create, 5);
        let log = f.log.borrow().clone();
        assert_eq!(log[0], "create vpc/main");
        assert_eq!(
            log.last().map(String::as_str),
            Some("create ecs-service/gw")
        );
        // Subnets got the real VPC id.
        let items = f.items.borrow().clone();
        assert_eq!(
            items[&Key::new(Kind::Subnet, "a")].props["vpc_id"],
            json!("vpc-1")
        );

        let again = run(&f, &w, Mode::Apply).await.expect("second apply");
        let s = Summary::of(&again);
        assert!(!s.has_changes(), "{s:?}");
        assert_eq!(s.unchanged, 5);
    }

    #[tokio::test]
    async fn changes_produce_exact_updates_and_deletes_in_reverse_order() {
        let f = Fake::default();
        run(&f, &world(&["a", "b"], "gw:1", 2), Mode::Apply)
            .await
            .expect("apply");
        f.log.borrow_mut().clear();

        let w2 = world(&["a"], "gw:2", 3);
        let plan = run(&f, &w2, Mode::Plan).await.expect("plan");
        let changed: Vec<(String, Action)> = plan
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .map(|c| (c.key.to_string(), c.action))
            .collect();
        assert_eq!(
            changed,
            vec![
                ("task-definition/gw".to_string(), Action::Update),
                ("ecs-service/gw".to_string(), Action::Update),
                ("subnet/b".to_string(), Action::Delete),
            ]
        );
        // The service's new task definition is unknown at plan time.
        let svc = plan
            .iter()
            .find(|c| c.key.kind == Kind::EcsService)
            .expect("svc");
        assert!(
            svc.fields
                .iter()
                .any(|fc| fc.field == "task_definition" && fc.to == Some(json!(PENDING)))
        );

        run(&f, &w2, Mode::Apply).await.expect("apply");
        let log = f.log.borrow().clone();
        assert_eq!(
            log,
            vec![
                "update task-definition/gw image",
                "update ecs-service/gw desired_count,task_definition",
                "delete subnet/b",
            ]
        );
        let items = f.items.borrow().clone();
        let td = items[&Key::new(Kind::TaskDefinition, "gw")].id.clone();
        assert_eq!(
            items[&Key::new(Kind::EcsService, "gw")].props["task_definition"],
            json!(td)
        );
    }

    #[tokio::test]
    async fn down_deletes_dependents_first() {
        let f = Fake::default();
        run(&f, &world(&["a", "b"], "gw:1", 2), Mode::Apply)
            .await
            .expect("apply");
        f.log.borrow_mut().clear();
        let none = |_: &Ids| Vec::new();
        run(&f, &none, Mode::Apply).await.expect("down");
        let log = f.log.borrow().clone();
        assert_eq!(
            log,
            vec![
                "delete ecs-service/gw",
                "delete task-definition/gw",
                "delete subnet/b",
                "delete subnet/a",
                "delete vpc/main",
            ]
        );
        assert!(f.items.borrow().is_empty());
    }

    #[tokio::test]
    async fn injected_failure_is_resumed_by_the_next_apply() {
        let f = Fake::default();
        let w = world(&["a", "b"], "gw:1", 2);
        let opts = Options {
            fail_before: Some(Key::new(Kind::Subnet, "b")),
        };
        let err = reconcile(&f, &w, Mode::Apply, &opts, &mut |_| {}).await;
        assert!(matches!(err, Err(EngineError::Injected(_))));
        assert_eq!(f.items.borrow().len(), 2);
        let resumed = run(&f, &w, Mode::Apply).await.expect("resume");
        let s = Summary::of(&resumed);
        assert_eq!((s.create, s.unchanged), (3, 2));
    }

    #[tokio::test]
    async fn immutable_change_is_refused() {
        let f = Fake::default();
        run(&f, &world(&["a"], "gw:1", 2), Mode::Apply)
            .await
            .expect("apply");
        let w = |ids: &Ids| {
            vec![Desired::new(
                Key::new(Kind::Vpc, "main"),
                &json!({"cidr": "10.9.0.0/16", "x": ids.id(Kind::Vpc, "main")}),
                vec![],
            )]
        };
        let plan = run(&f, &w, Mode::Plan).await.expect("plan");
        assert_eq!(plan[0].action, Action::Replace);
        let err = run(&f, &w, Mode::Apply).await;
        assert!(
            matches!(err, Err(EngineError::ReplacementRequired { .. })),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn shared_kinds_survive_down() {
        let f = Fake::default();
        let w = |_: &Ids| {
            vec![
                Desired::new(Key::new(Kind::Vpc, "main"), &json!({}), vec![]),
                Desired::new(Key::new(Kind::EcrRepository, "gateway"), &json!({}), vec![]),
            ]
        };
        run(&f, &w, Mode::Apply).await.expect("up");
        let none = |_: &Ids| Vec::new();
        let down = run(&f, &none, Mode::Apply).await.expect("down");
        assert_eq!(Summary::of(&down).delete, 1);
        let left: Vec<Key> = f.items.borrow().keys().cloned().collect();
        assert_eq!(left, vec![Key::new(Kind::EcrRepository, "gateway")]);
    }

    #[test]
    fn order_rejects_dependencies_that_come_later_and_duplicates() {
        let a = Desired::new(
            Key::new(Kind::Vpc, "v"),
            &json!({}),
            vec![Key::new(Kind::Subnet, "s")],
        );
        let b = Desired::new(Key::new(Kind::Subnet, "s"), &json!({}), vec![]);
        assert!(matches!(
            order(&[a, b.clone()]),
            Err(EngineError::Order { .. })
        ));
        assert!(matches!(
            order(&[b.clone(), b]),
            Err(EngineError::Duplicate(_))
        ));
    }
}
