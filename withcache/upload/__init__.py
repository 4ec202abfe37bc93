"""The write path: the one application behind nginx, and what runs it.

form        multipart/form-data, streamed (python-multipart): fields in memory,
            the file part handed on as a stream
app         the WSGI application: POST /<index>/ (`:action=file_upload`)
service     gunicorn serving the application on DATA/run/upload.sock
supervisor  `withcache serve` with indexes: nginx and the service, started and
            stopped together; nginx's configuration follows the definitions
"""
