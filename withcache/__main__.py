from withcache.cli import main

raise SystemExit(main())
