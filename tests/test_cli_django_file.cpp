// The cachelock command on a django-file alias: what it says of entries
// the library cannot show.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include <cachelock/cachelock.hpp>
#include <cachelock/django_file_cache.hpp>

#include "cli_support.hpp"

using test::Sandbox;

TEST_CASE("cli: a django-file entry too large to read is held; status and run say by what, release refuses") {
  Sandbox box;
  const auto locks = box.dir + "/django";
  std::ofstream{box.settings} << "CACHES:\n  default:\n    BACKEND: django.core.cache.backends.filebased."
                                 "FileBasedCache\n    LOCATION: "
                              << locks << "\n    TIMEOUT: 60\n";
  cachelock::DjangoFileCache ours{cachelock::FileOptions{.directory = locks}};
  REQUIRE(ours.add("small", "a value"));  // makes the directory

  // One byte more than cachelock reads (16 MiB): Django could have written it.
  constexpr std::size_t size = (16 << 20) + 1;
  const auto path = ours.path_for("job");
  std::ofstream{path}.close();
  std::filesystem::resize_file(path, size);
  REQUIRE(std::filesystem::file_size(path) == size);
  const std::string holder =
      "an entry too large to read: " + path + ", 16777217 bytes, more than the 16777216 cachelock reads";

  auto status = box.run({"status", "job"});
  CHECK(status.code == 1);
  CHECK(status.out == "job is held by " + holder + " (alias default)\n");

  auto run = box.run({"run", "job", "--", "true"});
  CHECK(run.code == 75);
  CHECK(run.err == "cachelock: job is held by " + holder + " (alias default)\n");

  // release --force cannot compare what it cannot read: it refuses, saying
  // which file to remove, and the entry stays.
  auto release = box.run({"release", "job", "--force"});
  CHECK(release.code == 69);
  CHECK(release.err == "cachelock: cannot release 'job': it is held by " + holder + "; remove that file to free it\n");
  CHECK(std::filesystem::file_size(path) == size);

  // A value within the limit is described as before.
  auto small = box.run({"status", "small"});
  CHECK(small.code == 1);
  CHECK(small.out == "small is held by a value not written by cachelock (7 bytes; a Django cache.add?) (alias default)\n");
}
