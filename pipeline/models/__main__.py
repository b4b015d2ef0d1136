"""`python -m pipeline.models` (`make models`): the registered models with parameter counts."""

import sys

from pipeline.models.registry import main

sys.exit(main())
