"""Static files storage: collectstatic's hashed, compressed copies once collected (the image), plain names before."""

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    """With a manifest, every URL is a hashed name (a missing entry stays an error). Without one (collectstatic not run:
    tests, DEBUG, a server started from a checkout) URLs keep their plain names, served from the apps' folders."""

    def stored_name(self, name):
        if not self.hashed_files:  # no manifest in STATIC_ROOT; collectstatic's own hashing does not come here
            return name
        return super().stored_name(name)
