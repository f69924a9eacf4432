"""The lab: several booted images wired into CLIP's network picture, on 127.0.0.1 only."""
