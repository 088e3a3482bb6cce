-- A member's privacy in a server and its profile there (Part D). A server profile that was
-- deleted keeps its row with cleared = 1, so its version goes on rising and a stale If-Match
-- from before the delete never matches a later one.
CREATE TABLE member_privacy (
    server_id           TEXT NOT NULL,
    user_uid            TEXT NOT NULL,
    presence_visibility TEXT NOT NULL CHECK (presence_visibility IN ('visible', 'hidden')),
    mention_permission  TEXT NOT NULL
        CHECK (mention_permission IN ('all_members', 'staff_only', 'nobody')),
    version             INTEGER NOT NULL CHECK (version > 0),
    updated_at          INTEGER NOT NULL,
    PRIMARY KEY (server_id, user_uid)
) STRICT;
CREATE TABLE server_profiles (
    server_id        TEXT NOT NULL,
    user_uid         TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    avatar_mode      TEXT NOT NULL CHECK (avatar_mode IN ('generated', 'uploaded')),
    avatar_preset_id TEXT NULL,
    avatar_asset_id  TEXT NULL,
    version          INTEGER NOT NULL CHECK (version > 0),
    updated_at       INTEGER NOT NULL,
    cleared          INTEGER NOT NULL CHECK (cleared IN (0, 1)),
    PRIMARY KEY (server_id, user_uid)
) STRICT;
