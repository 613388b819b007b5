-- The per-article tables, shaped for the rollup's bulk writes (measured with bench/rollup.py, a
-- million new article-days at once, on a 2-core machine):
--
-- * Article ids compare byte by byte (COLLATE "C"): they are opaque ids, not words to sort
--   alphabetically, and a locale's comparison made the sort and the primary-key inserts of the
--   rollup's MERGE about 30% slower. All three tables change together, so that joins on
--   `article` keep one collation.
-- * No foreign key to `sites` on article_days and articles: PostgreSQL checks one per inserted row
--   (a locking read of the site's row), 6 of the 14 seconds that insert took. The rollup only
--   writes rows for a site it has just read from `sites`, and the service never deletes a site;
--   whoever deletes one by hand deletes its article_days and articles rows too (site_days and the
--   other tables still cascade).
--
-- Changing the collation rewrites the three tables and their primary keys under an exclusive
-- lock: quick on a young database, minutes on one with years of article-days.
ALTER TABLE article_days DROP CONSTRAINT IF EXISTS article_days_site_id_fkey;
ALTER TABLE articles DROP CONSTRAINT IF EXISTS articles_site_id_fkey;
ALTER TABLE article_days ALTER COLUMN article TYPE text COLLATE "C";
ALTER TABLE articles ALTER COLUMN article TYPE text COLLATE "C";
ALTER TABLE article_baselines ALTER COLUMN article TYPE text COLLATE "C";
