import sys

from hub_client.cli import main

sys.exit(main())
