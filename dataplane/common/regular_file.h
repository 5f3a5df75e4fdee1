// CheckRegularFile: whether `path` names a regular file, for the files an operator points the agent
// at (its config, its tokens file), checked before anything reads them: a directory or a device
// read as a file failed half-way or never ended. Any thread.
#ifndef BRAID_DATAPLANE_COMMON_REGULAR_FILE_H_
#define BRAID_DATAPLANE_COMMON_REGULAR_FILE_H_

#include <sys/stat.h>

#include <cerrno>
#include <string>

#include "dataplane/common/status.h"

namespace braid::common {

// OK for a regular file; the errno of stat (NotFound, ...) or InvalidArgument "<what> is not a
// file" otherwise. `what` names the file in the message ("config file '/etc/braid.yaml'").
inline Status CheckRegularFile(const std::string& path, const std::string& what) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) return Status::FromErrno(errno, what);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(what + " is not a file");
  return Status::Ok();
}

}  // namespace braid::common

#endif  // BRAID_DATAPLANE_COMMON_REGULAR_FILE_H_
