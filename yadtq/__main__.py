from yadtq.cli import main

raise SystemExit(main())
