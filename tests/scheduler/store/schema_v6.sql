-- The store's schema at version 6 (schedctl 1686d02), dumped from a real database.
CREATE TABLE schedctl_meta (
	"key" VARCHAR NOT NULL, 
	value VARCHAR NOT NULL, 
	PRIMARY KEY ("key")
);
CREATE TABLE runs (
	id INTEGER NOT NULL, 
	tier VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	"trigger" VARCHAR NOT NULL, 
	slot DATETIME, 
	idempotency_key VARCHAR, 
	outcome VARCHAR NOT NULL, 
	reason TEXT NOT NULL, 
	exit_code INTEGER, 
	ref VARCHAR, 
	sha VARCHAR, 
	source JSON NOT NULL, 
	runner VARCHAR, 
	host VARCHAR, 
	owner_pid INTEGER, 
	owner_identity VARCHAR, 
	image VARCHAR, 
	image_id VARCHAR, 
	container_id VARCHAR, 
	gpus JSON NOT NULL, 
	driver_version VARCHAR, 
	cuda_version VARCHAR, 
	markers VARCHAR, 
	argv JSON NOT NULL, 
	counts JSON NOT NULL, 
	details JSON NOT NULL, 
	run_dir VARCHAR, 
	queued_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	duration_s FLOAT, 
	pruned_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (idempotency_key)
);
CREATE UNIQUE INDEX ux_runs_active_tier ON runs (tier) WHERE outcome IN ('queued', 'running');
CREATE INDEX ix_runs_outcome ON runs (outcome);
CREATE INDEX ix_runs_tier_id ON runs (tier, id);
CREATE TABLE tests (
	id INTEGER NOT NULL, 
	nodeid VARCHAR NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (nodeid)
);
CREATE TABLE gpu_drains (
	gpu_uuid VARCHAR NOT NULL, 
	gpu_index INTEGER NOT NULL, 
	code VARCHAR NOT NULL, 
	reason TEXT NOT NULL, 
	clears BOOLEAN NOT NULL, 
	drained_at DATETIME NOT NULL, 
	PRIMARY KEY (gpu_uuid)
);
CREATE TABLE alerts_outbox (
	id VARCHAR NOT NULL, 
	sink VARCHAR NOT NULL, 
	fingerprint VARCHAR NOT NULL, 
	action VARCHAR NOT NULL, 
	payload JSON NOT NULL, 
	state VARCHAR NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME NOT NULL, 
	last_error TEXT, 
	created_at DATETIME NOT NULL, 
	sent_at DATETIME, 
	PRIMARY KEY (id)
);
CREATE INDEX ix_outbox_state_next ON alerts_outbox (state, next_attempt_at);
CREATE TABLE alert_state (
	fingerprint VARCHAR NOT NULL, 
	tier VARCHAR NOT NULL, 
	failure_class VARCHAR NOT NULL, 
	state VARCHAR NOT NULL, 
	severity VARCHAR NOT NULL, 
	consecutive INTEGER NOT NULL, 
	greens INTEGER NOT NULL, 
	last_run_id INTEGER, 
	failing JSON NOT NULL, 
	external JSON NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (fingerprint)
);
CREATE TABLE test_results (
	test_id INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	attempt INTEGER DEFAULT '0' NOT NULL, 
	seq INTEGER NOT NULL, 
	final BOOLEAN DEFAULT '1' NOT NULL, 
	outcome VARCHAR NOT NULL, 
	duration_s FLOAT NOT NULL, 
	markers VARCHAR NOT NULL, 
	message TEXT, 
	peak_rss_bytes BIGINT, 
	rss_method VARCHAR, 
	cuda_peak_bytes BIGINT, 
	owner VARCHAR, 
	PRIMARY KEY (test_id, run_id, attempt, seq), 
	FOREIGN KEY(test_id) REFERENCES tests (id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
)
 WITHOUT ROWID

;
CREATE INDEX ix_test_results_run ON test_results (run_id);
CREATE TABLE test_daily (
	day VARCHAR NOT NULL, 
	test_id INTEGER NOT NULL, 
	tier VARCHAR NOT NULL, 
	runs INTEGER NOT NULL, 
	passed INTEGER NOT NULL, 
	failed INTEGER NOT NULL, 
	flaky INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	duration_sum FLOAT NOT NULL, 
	duration_max FLOAT NOT NULL, 
	peak_rss_max BIGINT, 
	first_run_id INTEGER NOT NULL, 
	last_run_id INTEGER NOT NULL, 
	first_at DATETIME, 
	last_at DATETIME, 
	PRIMARY KEY (day, test_id, tier), 
	FOREIGN KEY(test_id) REFERENCES tests (id)
)
 WITHOUT ROWID

;
CREATE TABLE test_weekly (
	week VARCHAR NOT NULL, 
	test_id INTEGER NOT NULL, 
	tier VARCHAR NOT NULL, 
	runs INTEGER NOT NULL, 
	passed INTEGER NOT NULL, 
	failed INTEGER NOT NULL, 
	flaky INTEGER NOT NULL, 
	skipped INTEGER NOT NULL, 
	duration_sum FLOAT NOT NULL, 
	duration_max FLOAT NOT NULL, 
	peak_rss_max BIGINT, 
	first_run_id INTEGER NOT NULL, 
	last_run_id INTEGER NOT NULL, 
	first_at DATETIME, 
	last_at DATETIME, 
	PRIMARY KEY (week, test_id, tier), 
	FOREIGN KEY(test_id) REFERENCES tests (id)
)
 WITHOUT ROWID

;
CREATE TABLE quarantine (
	test_id INTEGER NOT NULL, 
	reason TEXT NOT NULL, 
	owner VARCHAR, 
	created_at DATETIME NOT NULL, 
	expires_at DATETIME, 
	expiry_alerted_at DATETIME, 
	PRIMARY KEY (test_id), 
	FOREIGN KEY(test_id) REFERENCES tests (id)
);
CREATE TABLE gpu_leases (
	gpu_uuid VARCHAR NOT NULL, 
	gpu_index INTEGER NOT NULL, 
	run_id INTEGER NOT NULL, 
	tier VARCHAR NOT NULL, 
	acquired_at DATETIME NOT NULL, 
	PRIMARY KEY (gpu_uuid), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE TABLE image_builds (
	run_id INTEGER NOT NULL, 
	recipe VARCHAR NOT NULL, 
	image_id VARCHAR NOT NULL, 
	tag VARCHAR, 
	digest VARCHAR, 
	sha VARCHAR, 
	built_at DATETIME NOT NULL, 
	removed_at DATETIME, 
	PRIMARY KEY (run_id), 
	FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE INDEX ix_image_builds_recipe ON image_builds (recipe, removed_at);
