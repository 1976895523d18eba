from yadtq.frontends.cli import main

raise SystemExit(main())
