import sys

from launcher.stack import main

sys.exit(main())
