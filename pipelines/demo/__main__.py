import sys

from pipelines.demo.run import main

sys.exit(main())
