from bench.control_plane.main import main

raise SystemExit(main())
