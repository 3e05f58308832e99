-- sstar: SQL views over the run metrics, for DuckDB (https://duckdb.org).
--
-- Input: a relation named `metrics_files` holding the Parquet metrics of one output root
-- (<out>/metrics/run_date=YYYY-MM-DD/*.parquet, one row per concept per run; columns in README.md,
-- "Metrics"). Register it, then run this file as-is:
--
--   Python (a local folder or S3, through pyarrow; S3 needs no DuckDB extension):
--     import duckdb, pyarrow.dataset as ds
--     from storage.store.base import pyarrow_filesystem
--     fs, base = pyarrow_filesystem("s3://bucket/learned")          # or "/data/learned"
--     con = duckdb.connect()
--     con.register("metrics_files", ds.dataset(f"{base}/metrics", filesystem=fs, format="parquet",
--                                              partitioning="hive"))
--     con.execute(open("sql/views.sql").read())
--
--   DuckDB CLI on a local folder:
--     CREATE VIEW metrics_files AS
--       SELECT * FROM read_parquet('learned/metrics/*/*.parquet', hive_partitioning = true, union_by_name = true);
--     .read sql/views.sql
--
-- Similarities are raw CLIP cosines in [-1, 1]; inversion_lift = image_similarity - baseline_image_similarity.
-- reports/dashboard.py computes the same aggregates for reports/dashboard.html (a test checks they agree).

-- Every row, with run_date as a DATE and `reason`: the error's first line with quoted text replaced by '…'
-- and digit runs by '#', at most 160 characters, so that failures group by what went wrong.
CREATE OR REPLACE VIEW metrics AS
SELECT * REPLACE (CAST(run_date AS DATE) AS run_date),
       CASE WHEN error IS NULL THEN NULL
            ELSE left(regexp_replace(regexp_replace(split_part(error, chr(10), 1),
                                                    '''[^'']*''|"[^"]*"', '''…''', 'g'),
                                     '[0-9]+', '#', 'g'), 160)
       END AS reason
FROM metrics_files;

-- One row per concept: its most recent row (by created_at, then run_id). A `skipped` row carries the
-- scores of the run that learned the concept's current digest.
CREATE OR REPLACE VIEW latest_per_concept AS
SELECT *
FROM metrics
QUALIFY row_number() OVER (PARTITION BY concept_id ORDER BY created_at DESC, run_id DESC) = 1;

-- One row per run: when it wrote its rows, how many concepts ended ok / failed / skipped, the seconds
-- spent training and evaluating (sums over its concepts), and the mean lift of the concepts it learned.
CREATE OR REPLACE VIEW runs AS
SELECT run_id,
       min(run_date)                                       AS run_date,
       min(created_at)                                     AS started_at,
       max(created_at)                                     AS finished_at,
       count(*)                                            AS concepts,
       count(*) FILTER (WHERE status = 'ok')               AS ok,
       count(*) FILTER (WHERE status = 'failed')           AS failed,
       count(*) FILTER (WHERE status = 'skipped')          AS skipped,
       coalesce(sum(train_seconds), 0)                     AS train_seconds,
       coalesce(sum(eval_seconds), 0)                      AS eval_seconds,
       avg(inversion_lift) FILTER (WHERE status = 'ok')    AS mean_lift
FROM metrics
GROUP BY run_id;

-- Every failed row (a concept that failed in several runs appears once per run).
CREATE OR REPLACE VIEW failures AS
SELECT run_id, run_date, created_at, concept_id, digest, token, reason, error
FROM metrics
WHERE status = 'failed';

-- Why each run learned its concepts: one row per run and `relearn_reason` ('new', 'images changed',
-- 'concept.json changed', 'model changed', 'settings changed', combinations joined with ' + ', or
-- 'unknown (no earlier fingerprints)'), most first. Skipped and unusable concepts, and rows written before
-- the column existed (they read as null), have none. Last in this file: it is the one view that names a
-- column some metrics files lack, which read_parquet(..., union_by_name = true) only knows once one file has it.
CREATE OR REPLACE VIEW relearn_reasons AS
SELECT run_id, relearn_reason, count(*) AS concepts
FROM metrics
WHERE relearn_reason IS NOT NULL
GROUP BY run_id, relearn_reason
ORDER BY run_id, concepts DESC, relearn_reason;
