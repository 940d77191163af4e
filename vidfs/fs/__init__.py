"""The filesystem: FUSE requests in, answers out.

    operations.py  pyfuse3.Operations: translation only (arguments → VideoFS calls, exceptions → errno)
    videofs.py     open files, reads through the block cache, attributes, xattrs
    tree.py        inodes (stable hashes of provider + id), names in directories, lookups

A read goes on to `vidfs.io` (readahead → block cache → disk store → range reads); a listing goes to
`vidfs.catalog` (listing cache → provider).
"""
