//! RDS PostgreSQL and ElastiCache Redis with their subnet groups.

use super::*;

/// The data stores.
pub(super) fn push(b: &Build<'_>, out: &mut Vec<Desired>) {
    let cfg = b.cfg;
    let p = &b.p;
    out.push(Desired::new(
        k(Kind::DbSubnetGroup, "main"),
        &SubnetGroupSpec {
            name: format!("{p}-db"),
            description: format!("{p} database subnets"),
            subnets: b.subnet_ids("database"),
        },
        b.subnet_keys("database"),
    ));
    let db = &cfg.database;
    out.push(
        Desired::new(
            k(Kind::DbInstance, "main"),
            &DbInstanceSpec {
                identifier: format!("{p}-db"),
                engine: "postgres".into(),
                engine_version: db.engine_version.clone(),
                instance_class: db.instance_class.clone(),
                allocated_storage: db.allocated_storage_gb,
                multi_az: db.multi_az,
                storage_encrypted: true,
                backup_retention_days: db.backup_retention_days,
                deletion_protection: db.deletion_protection,
                publicly_accessible: false,
                subnet_group: format!("{p}-db"),
                security_groups: vec![b.sg("database")],
                master_username: "gateway".into(),
            },
            vec![
                k(Kind::DbSubnetGroup, "main"),
                k(Kind::SecurityGroup, "database"),
                k(Kind::Secret, "db-password"),
            ],
        )
        .input("password_secret", b.secret_arn("db-password")),
    );
    out.push(Desired::new(
        k(Kind::CacheSubnetGroup, "main"),
        &SubnetGroupSpec {
            name: format!("{p}-redis"),
            description: format!("{p} redis subnets"),
            subnets: b.subnet_ids("database"),
        },
        b.subnet_keys("database"),
    ));
    out.push(
        Desired::new(
            k(Kind::ReplicationGroup, "main"),
            &ReplicationGroupSpec {
                id: format!("{p}-redis"),
                node_type: cfg.redis.node_type.clone(),
                num_node_groups: cfg.redis.shards,
                replicas_per_node_group: cfg.redis.replicas_per_shard,
                cluster_mode: true,
                transit_encryption: true,
                at_rest_encryption: true,
                auth_token_enabled: true,
                multi_az: cfg.redis.replicas_per_shard > 0,
                automatic_failover: true,
            },
            vec![
                k(Kind::CacheSubnetGroup, "main"),
                k(Kind::SecurityGroup, "redis"),
                k(Kind::Secret, "redis-token"),
            ],
        )
        .input("auth_token_secret", b.secret_arn("redis-token"))
        .input("subnet_group", format!("{p}-redis"))
        .input("security_groups", b.sg("redis")),
    );
    // The metrics-agent sidecar's connections (ECS secrets): composed from
    // the endpoints and the generated passwords. The description names the
    // endpoint, so a new endpoint rewrites the value.
    let db_host = b.ids.get(Kind::DbInstance, "main", "endpoint");
    let redis_host = b.ids.get(Kind::ReplicationGroup, "main", "endpoint");
    let connections = [
        (
            "metrics-postgres",
            format!(
                "PostgreSQL DSN of gateway@{db_host}:{POSTGRES_PORT} for the metrics-agent sidecar"
            ),
            format!(
                "postgres://gateway:{{password}}@{db_host}:{POSTGRES_PORT}/postgres?sslmode=require"
            ),
            "db-password",
            k(Kind::DbInstance, "main"),
        ),
        (
            "metrics-redis",
            format!("Redis address of {redis_host}:{REDIS_PORT} for the metrics-agent sidecar"),
            format!("rediss://:{{password}}@{redis_host}:{REDIS_PORT}"),
            "redis-token",
            k(Kind::ReplicationGroup, "main"),
        ),
    ];
    for (name, description, template, password, store) in connections {
        let suffix = CONNECTION_SECRETS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| *s)
            .unwrap_or(name);
        out.push(
            Desired::new(
                k(Kind::ConnectionSecret, name),
                &SecretSpec {
                    name: secret_name(cfg, suffix),
                    description,
                },
                vec![store, k(Kind::Secret, password)],
            )
            .input("template", template)
            .input("password_secret", b.secret_arn(password)),
        );
    }
}
