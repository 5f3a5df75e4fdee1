# Project-wide warning and sanitizer flags.
add_compile_options(-Wall -Wextra -Werror -Wno-missing-field-initializers)
if(BRAID_TSAN)
  # -Wno-tsan: TSan does not model fences. EventQueue's fences order only its wakeup flag (an
  # atomic); the data it hands over is ordered by acquire/release, which TSan checks.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan)
  add_link_options(-fsanitize=thread)
endif()
if(BRAID_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
