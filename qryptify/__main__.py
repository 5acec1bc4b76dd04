from qryptify.cli import main

raise SystemExit(main())
