"""cffi builder (API mode) for ``ployz._lzc``: libzfs_core and libnvpair, compiled against the
system headers so that enum values and struct layouts come from ZFS itself, not from us."""

import shlex
import subprocess
import sys

from cffi import FFI

MISSING_HEADERS = (
    "ployz: the libzfs_core development files are missing (pkg-config cannot find "
    "'libzfs_core').\n"
    "Install them with: apt-get install -t bookworm-backports libzfslinux-dev\n"
    "(or run `make setup`, which configures bookworm-backports and installs everything)."
)


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(
            ["pkg-config", *args, "libzfs_core"], check=True, capture_output=True, text=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        sys.exit(MISSING_HEADERS)
    return shlex.split(out)


CDEF = """
typedef int... boolean_t;
typedef unsigned int uint_t;
typedef struct nvlist nvlist_t;
typedef struct nvpair nvpair_t;
typedef enum { DATA_TYPE_BOOLEAN, DATA_TYPE_BOOLEAN_VALUE, DATA_TYPE_BYTE, DATA_TYPE_INT8,
    DATA_TYPE_UINT8, DATA_TYPE_INT16, DATA_TYPE_UINT16, DATA_TYPE_INT32, DATA_TYPE_UINT32,
    DATA_TYPE_INT64, DATA_TYPE_UINT64, DATA_TYPE_STRING, DATA_TYPE_NVLIST,
    DATA_TYPE_UINT64_ARRAY, DATA_TYPE_STRING_ARRAY, DATA_TYPE_NVLIST_ARRAY, ... } data_type_t;
#define NV_UNIQUE_NAME ...

int nvlist_alloc(nvlist_t **, uint_t, int);
void nvlist_free(nvlist_t *);
int nvlist_unpack(char *, size_t, nvlist_t **, int);
int nvlist_add_boolean(nvlist_t *, const char *);
int nvlist_add_boolean_value(nvlist_t *, const char *, boolean_t);
int nvlist_add_uint64(nvlist_t *, const char *, uint64_t);
int nvlist_add_string(nvlist_t *, const char *, const char *);
int nvlist_add_nvlist(nvlist_t *, const char *, const nvlist_t *);
int nvlist_add_string_array(nvlist_t *, const char *, const char * const *, uint_t);
nvpair_t *nvlist_next_nvpair(nvlist_t *, const nvpair_t *);
const char *nvpair_name(const nvpair_t *);
data_type_t nvpair_type(const nvpair_t *);
int nvpair_value_boolean_value(const nvpair_t *, boolean_t *);
int nvpair_value_byte(const nvpair_t *, unsigned char *);
int nvpair_value_int8(const nvpair_t *, int8_t *);
int nvpair_value_uint8(const nvpair_t *, uint8_t *);
int nvpair_value_int16(const nvpair_t *, int16_t *);
int nvpair_value_uint16(const nvpair_t *, uint16_t *);
int nvpair_value_int32(const nvpair_t *, int32_t *);
int nvpair_value_uint32(const nvpair_t *, uint32_t *);
int nvpair_value_int64(const nvpair_t *, int64_t *);
int nvpair_value_uint64(const nvpair_t *, uint64_t *);
int nvpair_value_string(const nvpair_t *, const char **);
int nvpair_value_nvlist(nvpair_t *, nvlist_t **);
int nvpair_value_uint64_array(nvpair_t *, uint64_t **, uint_t *);
int nvpair_value_string_array(nvpair_t *, const char ***, uint_t *);
int nvpair_value_nvlist_array(nvpair_t *, nvlist_t ***, uint_t *);

typedef enum { ZFS_ERR_STREAM_TRUNCATED, ZFS_ERR_RESUME_EXISTS,
    ZFS_ERR_STREAM_LARGE_BLOCK_MISMATCH, ZFS_ERR_FROM_IVSET_GUID_MISMATCH,
    ZFS_ERR_FROM_IVSET_GUID_MISSING, ZFS_ERR_UNKNOWN_SEND_STREAM_FEATURE,
    ZFS_ERR_BOOKMARK_SOURCE_NOT_ANCESTOR, ZFS_ERR_WRONG_PARENT, ZFS_ERR_CRYPTO_NOTSUP,
    ... } zfs_errno_t;

int libzfs_core_init(void);

enum lzc_dataset_type { LZC_DATSET_TYPE_ZFS, ... };
enum lzc_send_flags { LZC_SEND_FLAG_EMBED_DATA, LZC_SEND_FLAG_LARGE_BLOCK,
    LZC_SEND_FLAG_COMPRESS, LZC_SEND_FLAG_RAW, ... };

int lzc_snapshot(nvlist_t *, nvlist_t *, nvlist_t **);
int lzc_create(const char *, enum lzc_dataset_type, nvlist_t *, uint8_t *, uint_t);
int lzc_destroy(const char *);
int lzc_destroy_snaps(nvlist_t *, boolean_t, nvlist_t **);
int lzc_bookmark(nvlist_t *, nvlist_t **);
int lzc_get_bookmarks(const char *, nvlist_t *, nvlist_t **);
int lzc_destroy_bookmarks(nvlist_t *, nvlist_t **);
int lzc_hold(nvlist_t *, int, nvlist_t **);
int lzc_release(nvlist_t *, nvlist_t **);
int lzc_get_holds(const char *, nvlist_t **);
int lzc_send(const char *, const char *, int, enum lzc_send_flags);
int lzc_send_resume(const char *, const char *, int, enum lzc_send_flags, uint64_t, uint64_t);
int lzc_send_space(const char *, const char *, enum lzc_send_flags, uint64_t *);
int lzc_send_space_resume_redacted(const char *, const char *, enum lzc_send_flags, uint64_t,
    uint64_t, uint64_t, const char *, int, uint64_t *);
int lzc_receive_resumable(const char *, nvlist_t *, const char *, boolean_t, boolean_t, int);
int lzc_receive(const char *, nvlist_t *, const char *, boolean_t, boolean_t, int);
boolean_t lzc_exists(const char *);
int lzc_rollback(const char *, char *, int);
int lzc_rollback_to(const char *, const char *);
int lzc_rename(const char *, const char *);
int lzc_sync(const char *, nvlist_t *, nvlist_t **);
int lzc_channel_program_nosync(const char *, const char *, uint64_t, uint64_t, nvlist_t *,
    nvlist_t **);

int mount(const char *, const char *, const char *, unsigned long, const void *);
int umount2(const char *, int);
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "ployz._lzc",
    "#include <libzfs_core.h>\n#include <sys/mount.h>\n",
    extra_compile_args=[a for a in _pkg_config("--cflags") if not a.startswith("-l")],
    extra_link_args=_pkg_config("--libs"),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
