"""Ingest: readers of dataset formats (image folders, manifests, COCO, IDX, text, Label Studio) into records.

``curato.commands.ingest`` records what they read in a workspace.
"""
