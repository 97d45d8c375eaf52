-- The fastjobs SQLite store's tables (rust/store/sqlite/). Times: ms since the epoch unless
-- named _us. Every table is keyed by queue where it belongs to one.
CREATE TABLE IF NOT EXISTS fastjobs_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

-- One row per queue that was used: the registry, its flags, counters and FIFO ends.
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    registered INTEGER NOT NULL DEFAULT 0,
    paused INTEGER NOT NULL DEFAULT 0,
    wake INTEGER NOT NULL DEFAULT 0,
    events_keep INTEGER,
    head INTEGER NOT NULL DEFAULT 0,
    tail INTEGER NOT NULL DEFAULT 0,
    undecodable INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    stalled INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    limits TEXT,
    group_limits TEXT
);

-- Jobs the store holds: waiting, delayed, active (leased under token) or failed.
-- ord orders waiting jobs of one priority: tail pushes count up, head pushes count down.
-- grp: the group its options name (NULL: none); a group's jobs wait in ord order alone.
CREATE TABLE IF NOT EXISTS jobs (
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    ord INTEGER NOT NULL DEFAULT 0,
    grp TEXT,
    due_us INTEGER,
    token TEXT,
    started_ms INTEGER,
    cancel INTEGER NOT NULL DEFAULT 0,
    failed_ms INTEGER,
    error BLOB,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_id ON jobs (queue, id);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, priority DESC, ord) WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS jobs_grouped ON jobs (queue, grp, ord) WHERE state = 'waiting' AND grp IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_delayed ON jobs (queue, due_us) WHERE state = 'delayed';
CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (queue, token) WHERE state = 'active';
CREATE INDEX IF NOT EXISTS jobs_failed ON jobs (queue, failed_ms) WHERE state = 'failed';

-- Groups with jobs waiting take turns (lowest turn first; '' is the ungrouped jobs); each
-- group has its own rate window.
CREATE TABLE IF NOT EXISTS groups (
    queue TEXT NOT NULL,
    grp TEXT NOT NULL,
    turn INTEGER NOT NULL,
    window_used INTEGER NOT NULL DEFAULT 0,
    window_end_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, grp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS leases (
    queue TEXT NOT NULL,
    token TEXT NOT NULL,
    deadline_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, token)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_deadline ON leases (queue, deadline_ms);
-- Leases the reaper ended: their worker's late acks are refused, its heartbeat told.
CREATE TABLE IF NOT EXISTS reaped (queue TEXT NOT NULL, token TEXT NOT NULL, PRIMARY KEY (queue, token)) WITHOUT ROWID;

-- What a job no longer held is known as: taken (a caller-chosen id), completed, cancelled;
-- kept 30 days at least (the result TTL when longer), as the Redis store's marks.
CREATE TABLE IF NOT EXISTS marks (
    queue TEXT NOT NULL, id TEXT NOT NULL, state TEXT NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS marks_expiry ON marks (queue, expires_ms);
-- The highest sequence number of generated ids each producer wrote (as long as marks).
CREATE TABLE IF NOT EXISTS watermarks (
    queue TEXT NOT NULL, producer TEXT NOT NULL, last_seq INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, producer)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS watermarks_expiry ON watermarks (queue, expires_ms);
CREATE TABLE IF NOT EXISTS chunks (queue TEXT NOT NULL, producer TEXT NOT NULL, first INTEGER NOT NULL, PRIMARY KEY (queue, producer, first)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (queue TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY (queue, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup (queue TEXT NOT NULL, key TEXT NOT NULL, holder TEXT NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY (queue, key)) WITHOUT ROWID;
-- What lives until expires_ms is swept by tick (rust/store/sqlite/queue.rs sweep).
CREATE INDEX IF NOT EXISTS results_expiry ON results (queue, expires_ms);
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (queue, expires_ms);
-- Workers whose blocked wait ends at once (nudge, leave).
CREATE TABLE IF NOT EXISTS nudges (queue TEXT NOT NULL, worker TEXT NOT NULL, PRIMARY KEY (queue, worker)) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS progress (queue TEXT NOT NULL, id TEXT NOT NULL, value BLOB NOT NULL, expires_ms INTEGER NOT NULL, PRIMARY KEY (queue, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (queue TEXT NOT NULL, id TEXT NOT NULL, line BLOB NOT NULL, expires_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS logs_id ON logs (queue, id);
CREATE INDEX IF NOT EXISTS progress_expiry ON progress (queue, expires_ms);
CREATE INDEX IF NOT EXISTS logs_expiry ON logs (queue, expires_ms);
CREATE TABLE IF NOT EXISTS callbacks (
    queue TEXT NOT NULL, id TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL, expires_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, id, field)
);
CREATE INDEX IF NOT EXISTS callbacks_expiry ON callbacks (queue, expires_ms);

CREATE TABLE IF NOT EXISTS schedules (key TEXT PRIMARY KEY, next_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS schedules_next ON schedules (next_ms, key);
CREATE TABLE IF NOT EXISTS schedule_fields (key TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (key, field)) WITHOUT ROWID;

-- Workflow records (chain:<id>, flow:<id>) and what a flow's children left for their parent.
CREATE TABLE IF NOT EXISTS books (book TEXT NOT NULL, field TEXT NOT NULL, value BLOB NOT NULL, PRIMARY KEY (book, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS book_expiry (book TEXT PRIMARY KEY, expires_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flow_results (book TEXT NOT NULL, node INTEGER NOT NULL, job_id TEXT NOT NULL, data BLOB NOT NULL, PRIMARY KEY (book, node, job_id));

-- A queue's events stream while its events_keep is set (rust/store/sqlite/events.rs): one row
-- per operation and kind of change, its jobs' ids (newline-separated) and the JSON lists of
-- common.lua's emit (names, attempts, delays: due or delay ms, data: results, errors or
-- progress) and the leasing worker. AUTOINCREMENT: a number is never used twice, so a reader
-- resuming after one misses nothing when the stream was emptied meanwhile.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    ids TEXT NOT NULL,
    names BLOB,
    attempts BLOB,
    delays BLOB,
    data BLOB,
    worker TEXT
);
CREATE INDEX IF NOT EXISTS events_queue ON events (queue, seq);

CREATE TABLE IF NOT EXISTS workers (worker TEXT PRIMARY KEY, entry BLOB NOT NULL);
