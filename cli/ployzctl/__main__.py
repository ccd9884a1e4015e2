from ployzctl.main import main

raise SystemExit(main())
