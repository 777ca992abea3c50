"""``python -m dashboards``: regenerate every dashboard JSON file next to this package."""

from dashboards.build import write_all

if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path.name}")
