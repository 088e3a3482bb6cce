-- Per-channel permissions for the member role (Part D): a private channel is seen only by
-- view_min_role and above, a read-only one posted in only by post_min_role and above, and a
-- voice channel with member_speak = 0 gives members listen-only tickets.
ALTER TABLE channels ADD COLUMN view_min_role TEXT NULL
    CHECK (view_min_role IN ('moderator', 'admin', 'owner'));
ALTER TABLE channels ADD COLUMN post_min_role TEXT NULL
    CHECK (post_min_role IN ('moderator', 'admin', 'owner'));
ALTER TABLE channels ADD COLUMN member_speak INTEGER NOT NULL DEFAULT 1
    CHECK (member_speak IN (0, 1));
