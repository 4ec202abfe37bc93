"""Named private package indexes: uploads with twine/uv, reads and writes per user.

The read path stays static: each index's pages are files under www/<name>/simple/
that nginx serves behind its own auth_basic; only uploads reach an application.

    config   the manifest's indexes: section, validated
    model    the published definitions (state/indexes.json) and file keys
    users    the password file and the per-index htpasswd files nginx reads
    dist     what an uploaded file is: filename, metadata, agreement (no I/O but reading it)
    db       the index_files and index_audit tables
    pages    one project's pages and the index root, written atomically
    accept   verify, place, record, republish: the one way a file enters an index
    sync     what `withcache sync` does for the indexes: definitions, auth files, pages
"""
