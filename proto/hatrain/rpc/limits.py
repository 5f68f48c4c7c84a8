"""The size of every string and list a request may carry. The agent refuses anything larger with
INVALID_ARGUMENT naming the field; agent.proto's comments point here.

Sizes that an admin may want to change (the config's bytes, files per job, watch streams per
user) are settings in agent.yml's `limits:` instead.
"""

JOB_ID_CHARS = 64
USER_CHARS = 64
TEAM_CHARS = 64
NAME_CHARS = 200
IMAGE_CHARS = 256
GPU_TYPE_CHARS = 64
CONFIG_NAME_CHARS = 128
FILE_PATH_CHARS = 4096
REQUEST_ID_CHARS = 64
PAGE_TOKEN_CHARS = 64
SECRETS = 32
SECRET_NAME_CHARS = 64
SECRET_BYTES = 64 * 1024
STATES = 16
KINDS = 16
PAGE_SIZE = 1000
TAIL = 1_000_000
TENSORBOARD_JOBS = 100
BATCH_JOBS = 1000  # jobs in one SubmitJobs
