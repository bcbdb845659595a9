"""OmegaConf resolvers used by conf/ (registered on import of runner.__main__ and in tests)."""
from omegaconf import OmegaConf

# Output folders are named after the experiment; "default" when none was chosen.
if not OmegaConf.has_resolver("exp_name"):
    OmegaConf.register_new_resolver("exp_name", lambda choice=None: choice if choice not in (None, "None", "null") else "default")
