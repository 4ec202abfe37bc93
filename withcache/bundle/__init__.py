"""Offline bundles: the store on a USB disk, for a site with no network.

format    what a bundle holds, and parsing each part (pure)
members   writing a tar stream or a directory; reading a tar member by member
export    `withcache export`: records, manifests as synced, Python pages, blobs
importer  `withcache import`: verify every byte, place through placement.py
"""
