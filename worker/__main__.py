from cli.worker import main

raise SystemExit(main())
