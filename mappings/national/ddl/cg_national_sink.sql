-- The national_frontdb sink's own bookkeeping (created by the sink when missing).
CREATE TABLE cg_national_sequence (
    batch_day VARCHAR(8) NOT NULL PRIMARY KEY,   -- YYYYMMDD (China time)
    last_sequence INTEGER NOT NULL               -- the day's last cd_batch sequence
);
CREATE TABLE cg_national_batches (
    batch_id VARCHAR(64) NOT NULL PRIMARY KEY,   -- the gateway's batch id (a retried batch keeps its cd_batch)
    cd_batch VARCHAR(13) NOT NULL,
    dataset VARCHAR(32) NOT NULL,
    written_at TIMESTAMP NOT NULL
);
