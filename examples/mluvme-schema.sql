-- The Mluv.Me application's schema, as its optimization guide describes it:
-- users, messages, daily_stats, saved_words, the user_stats_summary
-- materialized view, eleven idx_ indexes and alembic at revision 003.
-- Used by scripts/demo and by the integration tests (tests/support/fixture.rs).
-- ('simple' stands in for the guide's czech text search configuration,
-- which stock PostgreSQL does not have.)
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE users (
    id serial PRIMARY KEY,
    telegram_id bigint NOT NULL UNIQUE,
    level text NOT NULL DEFAULT 'beginner',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users,
    text text NOT NULL,
    correctness_score int,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE daily_stats (
    id serial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users,
    date date NOT NULL,
    messages_count int NOT NULL DEFAULT 0,
    xp int NOT NULL DEFAULT 0
);
CREATE TABLE saved_words (
    id serial PRIMARY KEY,
    user_id int NOT NULL REFERENCES users,
    word text NOT NULL,
    next_review_date date
);
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('003');

INSERT INTO users (telegram_id, level) SELECT 1000 + g, (ARRAY['beginner','intermediate','advanced'])[1 + g % 3] FROM generate_series(1, 200) g;
INSERT INTO messages (user_id, text, correctness_score, created_at)
    SELECT 1 + g % 200, 'ahoj svete ' || g, g % 100, now() - (g || ' minutes')::interval FROM generate_series(1, 5000) g;
INSERT INTO daily_stats (user_id, date, messages_count, xp)
    SELECT 1 + g % 200, current_date - (g / 200), g % 20, g % 50 FROM generate_series(1, 2000) g;
INSERT INTO saved_words (user_id, word, next_review_date)
    SELECT 1 + g % 200, 'slovo' || g, current_date + g % 10 FROM generate_series(1, 1000) g;

CREATE INDEX idx_messages_user_created ON messages (user_id, created_at DESC);
CREATE INDEX idx_daily_stats_user_date ON daily_stats (user_id, date);
CREATE INDEX idx_saved_words_user_word ON saved_words (user_id, word);
CREATE INDEX idx_messages_text_search ON messages USING gin (to_tsvector('simple', text));
CREATE INDEX idx_messages_correctness_score ON messages (correctness_score);
CREATE INDEX idx_saved_words_review ON saved_words (next_review_date);
CREATE INDEX idx_users_level ON users (level);
CREATE INDEX idx_daily_stats_date ON daily_stats (date);
CREATE INDEX idx_messages_created ON messages (created_at);

CREATE MATERIALIZED VIEW user_stats_summary AS
    SELECT u.id AS user_id, u.level, count(m.id) AS total_messages, avg(m.correctness_score) AS avg_score
    FROM users u LEFT JOIN messages m ON m.user_id = u.id GROUP BY u.id, u.level;
CREATE UNIQUE INDEX idx_user_stats_summary_user ON user_stats_summary (user_id);
CREATE INDEX idx_user_stats_summary_messages ON user_stats_summary (total_messages DESC);
ANALYZE;
