"""Updates of an image file: update repositories, core updates into the inactive slot, apps updates in
place, image edits, releases."""
